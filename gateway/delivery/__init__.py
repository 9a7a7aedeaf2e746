"""Delivery: the engine that drains the outbox (engine.py), a destination's lane and rate
limiter (lanes.py), one attempt (attempt.py) and re-routing stored events (reroute.py)."""

from gateway.delivery.engine import DeliveryEngine
from gateway.delivery.lanes import RateLimiter

__all__ = ["DeliveryEngine", "RateLimiter"]

"""The retry policy of a destination and the maths of what follows a failed attempt. Pure.

Owns `Backoff` and `DeliveryPolicy` (built by the config loader, read by destinations and
the delivery engine), `backoff_delay` and `decide`. No I/O, no clock, no randomness of its
own: callers pass `now` and `rand`, so every schedule is testable without waiting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gateway.errors import DeliveryError, LocalResourceError, PermanentDeliveryError


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 5.0
    max: float = 3600.0
    multiplier: float = 2.0
    jitter: float = 0.2


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    max_attempts: int = 12
    backoff: Backoff = field(default_factory=Backoff)
    max_age: float = 86400.0
    timeout: float = 15.0
    concurrency: int = 4
    rate_limit: tuple[float, float] | None = None  # (count, per seconds)
    ordered: bool = True


def backoff_delay(
    attempt: int, backoff: Backoff, rand: float, retry_after: float | None = None
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    Exponential from `initial` to `max`; Retry-After is a floor, itself capped at `max`;
    jitter only adds (up to `jitter` x the delay), so a server's floor is always respected.
    """
    base = min(backoff.max, max(backoff.initial, 0.0))
    if backoff.multiplier > 1 and backoff.initial > 0 and attempt > 1:
        try:
            ceiling = math.log(max(backoff.max / backoff.initial, 1.0)) / math.log(
                backoff.multiplier
            )
            exponent = min(attempt - 1, math.ceil(ceiling) if math.isfinite(ceiling) else 1000)
            base = min(backoff.max, backoff.initial * backoff.multiplier**exponent)
        except (OverflowError, ValueError):  # absurd settings: the ceiling is the answer
            base = backoff.max
    if retry_after is not None and retry_after > 0:
        base = max(base, min(retry_after, backoff.max))
    return base * (1.0 + backoff.jitter * min(max(rand, 0.0), 1.0))


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: str  # "retry" | "dead"
    reason: str
    next_attempt_at: float | None = None
    counted: bool = True  # False: the attempt does not use up the max_attempts budget


def decide(
    policy: DeliveryPolicy,
    attempt: int,
    queued_at: float,
    now: float,
    error: DeliveryError,
    rand: float,
) -> Decision:
    """What follows a failed attempt: another one later, or dead (and why)."""
    if isinstance(error, PermanentDeliveryError):
        return Decision("dead", error.reason)
    if isinstance(error, LocalResourceError):
        # our shortage, not the destination's: the first backoff step, whatever the count
        next_at = now + backoff_delay(1, policy.backoff, rand)
        if next_at > queued_at + policy.max_age:
            return Decision("dead", f"max_age ({error.reason})")
        return Decision("retry", error.reason, next_at, counted=False)
    if attempt >= policy.max_attempts:
        return Decision("dead", f"max_attempts ({error.reason})")
    next_at = now + backoff_delay(attempt, policy.backoff, rand, error.retry_after)
    if next_at > queued_at + policy.max_age:
        return Decision("dead", f"max_age ({error.reason})")
    return Decision("retry", error.reason, next_at)

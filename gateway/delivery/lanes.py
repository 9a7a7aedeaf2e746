"""A destination's lane: its queue, workers and rate limiter. Sleeps; no other I/O."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gateway.destinations.base import Destination
from gateway.store import DueDelivery


class RateLimiter:
    """Evenly spaced sends: `count` per `per` seconds."""

    def __init__(self, rate: tuple[float, float] | None) -> None:
        self.rate = rate
        self.interval = rate[1] / rate[0] if rate else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self._next)
        self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


@dataclass(slots=True)
class Lane:
    """One destination's queue and workers."""

    destination: Destination
    queue: asyncio.Queue[DueDelivery | None] = field(default_factory=asyncio.Queue)
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(None))
    busy: int = 0
    ids: set[int] = field(default_factory=set)  # deliveries queued or in flight here
    retiring: int = 0  # exit sentinels queued but not yet taken (concurrency lowered)

    @property
    def capacity(self) -> int:
        return self.destination.policy.concurrency * 8

    @property
    def load(self) -> int:
        return self.queue.qsize() + self.busy

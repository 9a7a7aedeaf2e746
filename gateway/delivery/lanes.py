"""A destination's lane: its queue, workers and rate limiter. Sleeps; no other I/O."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.destinations.base import Destination
from gateway.store import DueDelivery


class RateLimiter:
    """Evenly spaced sends: `count` per `per` seconds. `clock` (default: the running loop's)
    and `sleep` are injectable, so the spacing is testable without waiting."""

    def __init__(
        self,
        rate: tuple[float, float] | None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.interval = rate[1] / rate[0] if rate else 0.0
        self._next = 0.0
        self._clock = clock
        self._sleep = sleep

    async def wait(self) -> None:
        if not self.interval:
            return
        now = self._clock() if self._clock is not None else asyncio.get_running_loop().time()
        start = max(now, self._next)
        self._next = start + self.interval
        if start > now:
            await self._sleep(start - now)


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

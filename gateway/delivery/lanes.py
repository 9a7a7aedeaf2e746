"""A destination's lane: its queue, workers and rate limiter. Sleeps; no other I/O."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.destinations.base import Destination
from gateway.store import DueDelivery


class RateLimiter:
    """Evenly spaced sends: `count` per `per` seconds. `clock` (default: the running loop's)
    and `sleep` are injectable, so the spacing is testable without waiting.

    A reload that changes a destination's rate gives its lane a new limiter and retires the
    old one: whoever sleeps in the old one wakes at once and waits on the new one. Without
    that, a limit lifted by a reload kept every worker asleep on the old spacing (with
    `1/h`, for hours)."""

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
        self._retired: asyncio.Future[None] | None = None

    async def wait(self) -> bool:
        """Wait for the next slot. False: this limiter was retired meanwhile (wait on the
        lane's new one)."""
        if not self.interval:
            return True
        now = self._clock() if self._clock is not None else asyncio.get_running_loop().time()
        start = max(now, self._next)
        self._next = start + self.interval
        if start > now:
            return await self.pause(start - now)
        return True

    async def pause(self, delay: float) -> bool:
        """Sleep `delay` seconds, or until the limiter is retired (then False)."""
        retired = self._retired_future()
        if retired.done():
            return False
        sleeper = asyncio.ensure_future(self._sleep(delay))
        try:
            await asyncio.wait((sleeper, retired), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not sleeper.done():
                sleeper.cancel()
        return not retired.done()

    def retire(self) -> None:
        """A reload replaced this limiter: its sleepers stop waiting."""
        retired = self._retired_future()
        if not retired.done():
            retired.set_result(None)

    def _retired_future(self) -> asyncio.Future[None]:
        if self._retired is None:
            self._retired = asyncio.get_running_loop().create_future()
        return self._retired


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

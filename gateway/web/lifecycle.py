"""What readiness is made of: draining at shutdown, whether the store takes writes, and the
backlog of webhooks waiting for a commit. Does I/O (a store heartbeat, cached).

Draining comes before the listeners close: new webhooks get 503 (IDWise retries) while the
drain steps run (the delivery engine gives attempts in flight their grace period).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.errors import StoreError
from gateway.store import Store

READY_CACHE = 1.0
HEARTBEAT_TIMEOUT = 5.0


@dataclass
class Lifecycle:
    draining: bool = False
    waiting_for_commit: int = 0
    _ready: tuple[float, bool] = field(default=(0.0, False))
    _drain_steps: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def on_drain(self, step: Callable[[], Awaitable[None]]) -> None:
        self._drain_steps.append(step)

    async def drain(self) -> None:
        """Answer 503 and not-ready from now on, then run each drain step once, in order."""
        self.draining = True
        while self._drain_steps:
            await self._drain_steps.pop(0)()

    async def store_writable(self, store: Store | None) -> bool:
        """A heartbeat write at most once a READY_CACHE: probes must not load the store."""
        checked_at, ok = self._ready
        if time.monotonic() - checked_at < READY_CACHE:
            return ok
        ok = False
        if store is not None:
            try:
                await asyncio.wait_for(store.heartbeat(), HEARTBEAT_TIMEOUT)
                ok = True
            except (StoreError, TimeoutError):
                ok = False
        self._ready = (time.monotonic(), ok)
        return ok

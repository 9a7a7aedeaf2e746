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
    _ready: tuple[float, str] = field(default=(0.0, "unwritable"))
    _drain_steps: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def on_drain(self, step: Callable[[], Awaitable[None]]) -> None:
        self._drain_steps.append(step)

    async def drain(self) -> None:
        """Answer 503 and not-ready from now on, then run each drain step once, in order."""
        self.draining = True
        while self._drain_steps:
            await self._drain_steps.pop(0)()

    async def store_writable(self, store: Store | None) -> bool:
        return await self.store_status(store) == "ok"

    async def store_status(self, store: Store | None) -> str:
        """`ok`, or why the store cannot take an event: `deleted` (the database file is
        gone), `full` (the last write found no space), `disk_low` (less than
        storage.min_free left) or `unwritable` (locked, read-only, ...). A heartbeat write
        at most once a READY_CACHE: probes must not load the store."""
        checked_at, status = self._ready
        if time.monotonic() - checked_at < READY_CACHE:
            return status
        status = "unwritable"
        if store is not None:
            try:
                await asyncio.wait_for(store.heartbeat(), HEARTBEAT_TIMEOUT)
                # a backend that cannot tell has no space_problem (it answers 503 when full)
                space: Callable[[], str | None] | None = getattr(store, "space_problem", None)
                status = (space() if space else None) or "ok"
            except StoreError as exc:
                status = "deleted" if exc.reason == "deleted" else "unwritable"
            except TimeoutError:
                status = "unwritable"
        self._ready = (time.monotonic(), status)
        return status

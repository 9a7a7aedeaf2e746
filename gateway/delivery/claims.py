"""The claims this replica holds on a shared store, kept alive while their attempts run,
and the cluster-wide rate limiter. Does I/O (through the store).

On a store shared by several replicas (`store.shared`), every delivery the dispatcher hands
to a lane is claimed: its lease outlasts the destination's attempt timeout, and the keeper
extends it every KEEP_INTERVAL while the delivery is queued or on the wire, so only a
replica that died or froze loses it. A claim dropped without an outcome (shutdown) is
released so another replica takes it at once. On a store of one process (SQLite) all of
this is idle: claims are never taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from gateway.delivery.lanes import RateLimiter
from gateway.destinations.base import Destination
from gateway.errors import StoreError
from gateway.logs import log_fields
from gateway.store import DueDelivery, Store

log = logging.getLogger("gateway.delivery")

KEEP_INTERVAL = 1.0  # well inside the lease margin (storage.lease_margin, 30s by default)


def attempt_timeout(destination: Destination) -> float:
    """How long one attempt may take: the policy's timeout, or the destination's own (a
    script's) when it is longer."""
    own = getattr(destination, "timeout", 0.0)
    return max(destination.policy.timeout, own if isinstance(own, int | float) else 0.0)


@dataclass(slots=True)
class ClaimKeeper:
    store: Store
    #: delivery id -> (fencing token, attempt timeout): every claim this replica holds
    held: dict[int, tuple[int, float]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    def hold(self, job: DueDelivery, destination: Destination) -> None:
        if self.store.shared:
            self.held[job.id] = (job.claim, attempt_timeout(destination))

    def done(self, delivery_id: int) -> None:
        """Its outcome is committed (the store cleared the claim with it)."""
        self.held.pop(delivery_id, None)

    def start(self) -> None:
        if self.store.shared:
            self.task = asyncio.create_task(self._keep_forever(), name="delivery-leases")

    async def stop(self, dropped: set[int]) -> None:
        """Stop extending; give back the claims of `dropped` deliveries (no outcome)."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        claims = [(i, self.held.pop(i)[0]) for i in dropped if i in self.held]
        if claims:
            with contextlib.suppress(StoreError):
                await self.store.release(claims)

    async def _keep_forever(self) -> None:
        while True:
            await asyncio.sleep(KEEP_INTERVAL)
            by_timeout: dict[float, list[tuple[int, int]]] = {}
            for delivery_id, (token, timeout) in list(self.held.items()):
                by_timeout.setdefault(timeout, []).append((delivery_id, token))
            for timeout, claims in by_timeout.items():
                try:
                    lost = await self.store.extend_leases(claims, timeout)
                except StoreError as exc:
                    log_fields(log, logging.WARNING, "cannot extend claims", {"reason": exc.reason})
                    continue
                # recorded meanwhile, or overtaken after this replica stalled: either way the
                # outcome decides (a late one is refused), so only say so
                lost = {i for i in lost if i in self.held}
                if lost:
                    log_fields(
                        log, logging.WARNING, "claims lost", {"count": len(lost), "reason": "lease"}
                    )


class ClusterRateLimiter(RateLimiter):
    """`count` per `per` seconds for the whole cluster: each send reserves the next slot in
    the shared store. If the store cannot be reached, this replica spaces its own sends
    (the attempt's outcome could not be recorded then anyway)."""

    def __init__(
        self,
        rate: tuple[float, float] | None,
        store: Store,
        destination: str,
        replaces: RateLimiter | None = None,
    ) -> None:
        super().__init__(rate)
        self._store = store
        self._destination = destination
        # a reload changed the rate: the first booking drops the slots the old spacing
        # booked ahead (with 1/h, hours), or retired workers would book behind them again
        self._restart = replaces is not None and replaces.rate is not None

    async def wait(self) -> bool:
        if not self.interval:
            return True
        try:
            restart, self._restart = self._restart, False
            delay = await self._store.reserve_rate_slot(
                self._destination, self.interval, restart=restart
            )
        except StoreError:
            return await super().wait()
        if delay > 0:
            return await self.pause(delay)
        return True

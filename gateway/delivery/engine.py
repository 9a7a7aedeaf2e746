"""The delivery engine: drains the outbox into each destination's lane. Does I/O.

The schedule lives in the database, never only in memory: a dispatcher asks the store for
due deliveries per destination (respecting journey order), hands them to that destination's
lane (its own workers, concurrency and rate limit, so a slow destination never delays the
others), and each attempt's outcome is committed before the delivery can be picked again.
On a store shared by several replicas, what `due` returns is claimed by this replica (see
claims.py): the claim is kept alive while the attempt runs, its fencing token goes with
the outcome, and an outcome the store refuses (the claim was lost) is only logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from gateway.delivery.attempt import Attempter
from gateway.delivery.claims import ClaimKeeper, ClusterRateLimiter, attempt_timeout
from gateway.delivery.lanes import Lane, RateLimiter
from gateway.destinations.base import Destination
from gateway.destinations.client import DestinationClients, HttpClient
from gateway.errors import StoreError
from gateway.logs import log_fields
from gateway.retry import DeliveryPolicy
from gateway.store import AttemptRecord, DueDelivery, Store

if TYPE_CHECKING:
    from gateway.metrics import Metrics

log = logging.getLogger("gateway.delivery")

POLL_INTERVAL = 1.0  # picks up deliveries queued by another process (the CLI's replay)
MIN_PASS_INTERVAL = 0.002
EXPIRE_INTERVAL = 30.0
STOP_DISPATCH_WAIT = 5.0


class DeliveryEngine:
    def __init__(
        self,
        store: Store,
        destinations: Callable[[], dict[str, Destination]],
        default_policy: Callable[[], DeliveryPolicy],
        client: HttpClient,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        clients: DestinationClients | None = None,
    ) -> None:
        self._store = store
        self._destinations = destinations
        self._default_policy = default_policy
        self._metrics = metrics
        self._clock = clock
        self._attempter = Attempter(client, clock, rand, metrics, clients)
        self._lanes: dict[str, Lane] = {}
        self._inflight: set[int] = set()
        # ids finished while a `due` query was running: that query's snapshot predates their
        # commit, so its rows may still say "pending" and must not be dispatched again
        self._finished_during_query: set[int] = set()
        self._wake = asyncio.Event()
        self._next_wake: float | None = None
        # destinations that may have due deliveries; only these are queried on the next pass
        # (all of them on every POLL_INTERVAL, which also catches the CLI's replays)
        self._dirty: set[str] = set()
        self._next_full_pass = 0.0
        self._dispatcher: asyncio.Task[None] | None = None
        self._stopping = False
        # outcomes waiting to be recorded: written together, one store job per batch
        self._records: list[tuple[AttemptRecord, asyncio.Future[None]]] = []
        self._retired: list[asyncio.Task[None]] = []  # workers of lanes removed by a reload
        self._recorder: asyncio.Task[None] | None = None
        self._claims = ClaimKeeper(store)
        self._dropped: set[int] = set()  # claimed, then dropped at shutdown without an outcome

    def wake(self, destinations: Iterable[str] | None = None) -> None:
        """New deliveries are committed (for these destinations, or any)."""
        if destinations is None:
            self._next_full_pass = 0.0
        else:
            self._dirty.update(destinations)
        self._wake.set()

    def wake_at(self, at: float) -> None:
        """A retry is scheduled for `at`."""
        if self._next_wake is None or at < self._next_wake:
            self._next_wake = at
            self._wake.set()

    def start(self) -> None:
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="delivery-dispatcher")
        self._claims.start()

    async def stop(self, grace: float) -> None:
        """Stop dispatching; give attempts in progress `grace` seconds, then cancel them.
        Whatever did not finish stays pending in the store and resumes on the next start."""
        if self._stopping:
            return
        self._stopping = True
        if self._dispatcher is not None:
            # let a pass in progress finish: a `due` cancelled mid-query may have claimed
            # rows (shared store) that this engine would then never see, nor release
            self._wake.set()
            await asyncio.wait([self._dispatcher], timeout=STOP_DISPATCH_WAIT)
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        workers: list[asyncio.Task[None]] = [w for w in self._retired if not w.done()]
        for lane in self._lanes.values():
            while not lane.queue.empty():
                job = lane.queue.get_nowait()
                if job is not None:
                    self._inflight.discard(job.id)
                    lane.ids.discard(job.id)
                    self._dropped.add(job.id)
            for _ in lane.workers:
                lane.queue.put_nowait(None)
            workers += lane.workers
        if workers:
            _, still_running = await asyncio.wait(workers, timeout=grace)
            for task in still_running:
                task.cancel()
            if still_running:
                await asyncio.wait(still_running)
                log.warning(
                    "shutdown grace over",
                    extra={"fields": {"cancelled_attempts": len(still_running)}},
                )
        if self._recorder is not None:
            await asyncio.wait([self._recorder], timeout=5)  # outcomes already known get written
        await self._claims.stop(self._dropped)  # another replica takes them at once

    # ---- dispatch ----------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        last_expire = 0.0
        while not self._stopping:
            try:
                now = self._clock()
                if now - last_expire >= EXPIRE_INTERVAL:
                    last_expire = now
                    await self._expire(now)
                await self._dispatch(now)
            except StoreError as exc:
                log_fields(log, logging.ERROR, "delivery dispatch failed", {"reason": exc.reason})
            except Exception:
                log.exception("delivery dispatcher error")
            if self._stopping:
                return
            timeout = POLL_INTERVAL
            if self._next_wake is not None:
                timeout = min(timeout, max(0.0, self._next_wake - self._clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            # under load every accept wakes us: a short pause lets one pass serve many of them
            await asyncio.sleep(MIN_PASS_INTERVAL)
            self._wake.clear()

    async def _dispatch(self, now: float) -> None:
        destinations = self._destinations()
        self._sync_lanes(destinations)
        if (self._next_wake is not None and self._next_wake <= now) or now >= self._next_full_pass:
            self._next_wake = None
            self._next_full_pass = now + POLL_INTERVAL
            self._dirty.update(self._lanes)
        dirty, self._dirty = self._dirty, set()
        for name in dirty:
            lane = self._lanes.get(name)
            if lane is None:
                continue  # a destination no longer configured: its deliveries wait
            free = lane.capacity - lane.load
            if free <= 0:
                continue  # a finishing worker marks the lane dirty again
            self._finished_during_query.clear()
            ordered = lane.destination.policy.ordered
            if self._store.shared:  # claims: the lease must outlast one attempt
                timeout = attempt_timeout(lane.destination)
                rows = await self._store.due(
                    name, now, free, ordered, exclude=lane.ids, attempt_timeout=timeout
                )
            else:
                rows = await self._store.due(name, now, free, ordered, exclude=lane.ids)
            for row in rows:
                if row.id in self._inflight or row.id in self._finished_during_query:
                    continue
                self._claims.hold(row, lane.destination)
                self._inflight.add(row.id)
                lane.ids.add(row.id)
                lane.queue.put_nowait(row)
            if len(rows) >= free:
                self._dirty.add(name)  # there may be more due than fit this time

    def _sync_lanes(self, destinations: dict[str, Destination]) -> None:
        for name, destination in destinations.items():
            lane = self._lanes.get(name)
            if lane is None:
                lane = self._lanes[name] = Lane(destination)
            if lane.destination is not destination:
                lane.destination = destination
            if lane.limiter.rate != destination.policy.rate_limit:
                retired, lane.limiter = (
                    lane.limiter,
                    ClusterRateLimiter(
                        destination.policy.rate_limit, self._store, name, replaces=lane.limiter
                    )
                    if self._store.shared
                    else RateLimiter(destination.policy.rate_limit),
                )
                retired.retire()  # its sleepers wait on the new rate instead
            lane.workers = [w for w in lane.workers if not w.done()]
            active = len(lane.workers) - lane.retiring
            wanted = destination.policy.concurrency
            for _ in range(wanted - active):
                lane.workers.append(asyncio.create_task(self._work(lane), name=f"deliver-{name}"))
            for _ in range(active - wanted):
                lane.retiring += 1
                lane.queue.put_nowait(None)  # whichever worker takes this exits
        # a destination removed by a reload: its lane stops; its deliveries stay pending
        for name in list(self._lanes):
            if name not in destinations:
                lane = self._lanes.pop(name)
                self._retired.extend(lane.workers)
                for _ in lane.workers:
                    lane.queue.put_nowait(None)

    async def _expire(self, now: float) -> None:
        ages = {name: d.policy.max_age for name, d in self._destinations().items()}
        expired = await self._store.expire(
            ages, self._default_policy().max_age, now, in_flight=set(self._inflight)
        )
        for destination, count in expired.items():
            log.warning(
                "deliveries expired",
                extra={"fields": {"destination": destination, "count": count, "reason": "max_age"}},
            )
            if self._metrics is not None:
                self._metrics.deliveries.labels(destination, "dead").inc(count)

    # ---- attempts ----------------------------------------------------------------------
    async def _work(self, lane: Lane) -> None:
        while True:
            job = await lane.queue.get()
            if job is None:
                lane.retiring = max(0, lane.retiring - 1)
                return
            lane.busy += 1
            record: AttemptRecord | None = None
            try:
                while not await lane.limiter.wait():
                    pass  # a reload replaced the limiter meanwhile: wait on the new one
                try:
                    record = await self.attempt(lane.destination, job)
                except Exception:  # never let a worker die: park the delivery, keep it pending
                    log.exception("delivery attempt failed internally")
                    policy = lane.destination.policy
                    record = AttemptRecord(
                        delivery_id=job.id,
                        number=job.attempts + 1,
                        started_at=self._clock(),
                        duration=0.0,
                        outcome="retry",
                        reason="internal",
                        next_attempt_at=self._clock() + max(policy.backoff.max, 1.0),
                        claim=job.claim,
                    )
            finally:
                lane.busy -= 1
                if record is None:  # cancelled at shutdown: no outcome, it stays pending
                    self._dropped.add(job.id)
                    self._release(lane, job.id, None)
                else:
                    # The worker moves on at once; the delivery stays in flight until its
                    # outcome is committed, so no query can hand it out again meanwhile.
                    # (Waiting for that fsync here would cap a lane at workers/fsync time.)
                    self._record(record).add_done_callback(
                        functools.partial(self._released, lane, record)
                    )

    def _released(self, lane: Lane, record: AttemptRecord, _: asyncio.Future[None]) -> None:
        self._release(lane, record.delivery_id, record)

    def _release(self, lane: Lane, delivery_id: int, record: AttemptRecord | None) -> None:
        lane.ids.discard(delivery_id)
        self._inflight.discard(delivery_id)
        self._finished_during_query.add(delivery_id)
        if record is not None and record.outcome == "retry" and record.next_attempt_at:
            self.wake_at(record.next_attempt_at)
        # a finished delivery frees capacity and may release the next of its journey
        self.wake((lane.destination.name,))

    def _record(self, record: AttemptRecord) -> asyncio.Future[None]:
        """Queue an outcome for the store; resolves once it is committed. Outcomes that
        arrive while a batch is being written go together in the next one."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._records.append((record, future))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._write_records(), name="delivery-recorder")
        return future

    async def _write_records(self) -> None:
        delay = 0.1
        while self._records:
            batch, self._records = self._records, []
            try:
                refused = await self._store.record([record for record, _ in batch])
            except Exception as exc:
                # An outcome that cannot be stored must not be forgotten: its delivery would
                # look untouched and be sent again at once. Keep it (and the delivery in
                # flight) and retry until the store takes it. Any exception: a recorder that
                # died would leave its deliveries in flight for good.
                reason = exc.reason if isinstance(exc, StoreError) else type(exc).__name__
                log_fields(
                    log,
                    logging.ERROR,
                    "cannot record attempts; retrying",
                    {"reason": reason, "waiting": len(batch)},
                )
                self._records[:0] = batch
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            for record, _ in batch:
                self._claims.done(record.delivery_id)
            if refused:
                # a replay or expiry meanwhile, or (shared store) a claim this replica lost
                # after stalling past its lease: the outcome of whoever holds it now counts
                log_fields(
                    log,
                    logging.WARNING,
                    "delivery outcomes refused",
                    {"deliveries": sorted(refused), "reason": "not_claimed"},
                )
            for _, future in batch:
                if not future.done():  # its worker may have been cancelled at shutdown
                    future.set_result(None)

    async def attempt(self, destination: Destination, job: DueDelivery) -> AttemptRecord:
        """One attempt of one delivery (see `Attempter`). Never raises DeliveryError."""
        return await self._attempter.attempt(destination, job)

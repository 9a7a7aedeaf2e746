"""The store: the only place with SQL. This module is its interface, the shape every backend
plugs into; the handlers, the delivery engine and the CLI see nothing else.

A backend keeps three promises: `accept` returns only once the event and all its deliveries
are durably committed (or raises `StoreError`, never half of it); a delivery's outcome is
recorded only while it is still pending (a replay or expiry meanwhile wins); every failure
is a `StoreError` whose `reason` says what went wrong (`locked`, `full`, `read_only`, ...).

Claims. A store `shared` by several processes (PostgreSQL) claims what `due` returns: each
row carries a fencing token (`DueDelivery.claim`) and a lease that outlasts an attempt of
`attempt_timeout` seconds by the store's margin; nobody else gets it until the lease expires;
`extend_leases` keeps it while the attempt runs;
`record` applies an outcome only with the current token and returns the ids it refused.
Rate limits are reserved in the store (`reserve_rate_slot`) so they hold for the cluster.
A store used by one process (SQLite) implements the same calls trivially: its one engine
never hands a delivery out twice, so claims are token 0 and always its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from gateway.store.records import (
    Accepted,
    AttemptRecord,
    DueDelivery,
    EventFilter,
    EventPage,
    Requeued,
)

if TYPE_CHECKING:
    from gateway.config.model import StorageConfig
    from gateway.events import Event


class Store(Protocol):
    #: several processes share this store: due() claims with a lease, limits are shared
    shared: bool

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def heartbeat(self) -> None:
        """A write that proves the store takes commits (readiness)."""

    def listen(self, listener: Callable[[Iterable[str] | None], None]) -> Callable[[], None]:
        """Call `listener(destinations)` after each commit of this process that made
        deliveries due (None: any destination); returns the undo. The delivery engine
        listens, so whoever writes need not know it."""

    @property
    def writer_stats(self) -> tuple[int, int]:
        """(commits, jobs committed) since open."""

    # ---- ingest
    async def accept(
        self,
        event: Event,
        routes: Sequence[tuple[str, str | None]],
        rules: Sequence[str],
        source_ip: str | None,
        headers: dict[str, str],
        received_at: float | None = None,
    ) -> Accepted: ...
    async def import_events(
        self, events: Iterable[Event], received_at: float, destination: str | None = None
    ) -> int: ...

    # ---- the outbox
    async def due(
        self,
        destination: str,
        now: float,
        limit: int,
        ordered: bool,
        exclude: Iterable[int] = (),
        *,
        attempt_timeout: float = 0.0,
    ) -> list[DueDelivery]: ...
    async def record(self, records: Sequence[AttemptRecord]) -> set[int]:
        """The ids whose outcome was refused (claim lost, replayed or expired meanwhile)."""

    async def extend_leases(
        self, claims: Sequence[tuple[int, int]], attempt_timeout: float
    ) -> set[int]:
        """(delivery id, token) claims made to outlast `attempt_timeout` again; the ids not ours."""

    async def release(self, claims: Sequence[tuple[int, int]]) -> None:
        """Claims given back without an outcome (shutdown): due again at once."""

    async def reserve_rate_slot(
        self, destination: str, interval: float, restart: bool = False
    ) -> float:
        """Seconds to wait before the next send to `destination` (one per `interval`).
        `restart`: the rate changed (a reload); slots booked ahead at the old spacing are
        dropped and the new spacing counts from now."""

    async def expire(
        self,
        max_age: dict[str, float],
        default_max_age: float,
        now: float,
        in_flight: set[int] | None = None,
    ) -> dict[str, int]: ...
    async def replay(
        self,
        *,
        delivery_id: int | None = None,
        event: str | None = None,
        dead: bool = False,
        destination: str | None = None,
        since: float | None = None,
        pending: bool = False,
    ) -> int:
        """`requeue`, counted."""

    async def requeue(
        self,
        *,
        delivery_id: int | None = None,
        event: str | None = None,
        dead: bool = False,
        destination: str | None = None,
        since: float | None = None,
        pending: bool = False,
    ) -> list[Requeued]:
        """Re-queue matching deliveries (pending ones are made due now, never duplicated) and
        say which. `dead` / `pending`: only deliveries in that state (decided in the same
        statement, so one delivered meanwhile is never sent again). A finished one restarts
        `queued_at` (its `max_age` counts from the replay) and keeps its first `queued_at` as
        `first_queued_at`."""

    async def add_routes(
        self, additions: Iterable[tuple[int, str, str | None, str | None]]
    ) -> int: ...

    # ---- retention
    async def prune(self, cutoff: float, batch: int = 500) -> int: ...

    # ---- queries (CLI, metrics)
    async def pending_stats(self) -> list[dict[str, Any]]: ...
    async def list_events(
        self,
        *,
        event_type: str | None = None,
        since: float | None = None,
        journey: str | None = None,
        status: str | None = None,
        destination: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]: ...
    async def page_events(
        self,
        query: EventFilter,
        *,
        before: int | None = None,
        limit: int = 50,
        window: int | None = None,
    ) -> EventPage:
        """Keyset pagination by id, newest first (`list_events` is its first page);
        `window` bounds the ids scanned for filters no index serves."""

    async def get_event(self, key: str, *, with_raw: bool = False) -> dict[str, Any] | None: ...
    async def list_deliveries(
        self,
        *,
        status: str | None = None,
        destination: str | None = None,
        event_type: str | None = None,
        event_row: int | None = None,
        journey: str | None = None,
        since: float | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> list[dict[str, Any]]: ...
    async def count_deliveries(
        self,
        *,
        status: str | None = None,
        destination: str | None = None,
        since: float | None = None,
    ) -> int: ...
    async def delivery_stats(self) -> list[dict[str, Any]]:
        """Per destination: pending, oldest, retrying, retrying_since, dead, last_error."""

    async def webhook_counts(self, since: float) -> dict[str, int]:
        """{"accepted": n, "duplicate": n} received since `since` (duplicates are stored)."""

    async def get_delivery(self, delivery_id: int) -> dict[str, Any] | None: ...
    async def events_for_reroute(
        self, *, event: str | None = None, since: float | None = None, event_type: str | None = None
    ) -> list[tuple[int, bytes]]: ...
    async def existing_routes(self, event_rows: Sequence[int]) -> set[tuple[int, str]]: ...


class ServeLock(Protocol):
    def acquire(self) -> None:
        """Raises StoreError("in_use") when another gateway serves the same store."""

    def release(self) -> None: ...


class _NoLock:
    """Several replicas share a PostgreSQL store: nothing to hold."""

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass


def serve_lock(storage: StorageConfig) -> ServeLock:
    """What `serve` holds for its whole life so that one gateway serves one SQLite file
    (a backend built for several replicas needs none)."""
    if storage.backend == "postgres":
        return _NoLock()
    from gateway.store.sqlite.lock import ServeLock as SqliteServeLock

    return SqliteServeLock(storage.path)


def create_store(storage: StorageConfig, *, for_cli: bool = False) -> Store:
    """The configured backend, not yet opened. The CLI's store does not enforce `max_size`:
    a replay or a prune must still work on a store that reached it."""
    # imported here: each backend imports this package's records, and only one is used
    if storage.backend == "postgres":
        from gateway.store.postgres import PostgresStore

        assert storage.dsn is not None, "config validation requires a dsn for postgres"
        return PostgresStore(
            storage.dsn.reveal(),
            pool_min=1 if for_cli else storage.pool_min,
            pool_max=2 if for_cli else storage.pool_max,
            connect_timeout=storage.connect_timeout,
            lease_margin=storage.lease_margin,
        )
    from gateway.store.sqlite import SqliteStore

    max_size = None if for_cli else storage.max_size
    return SqliteStore(
        storage.path,
        storage.busy_timeout,
        max_size,
        storage.min_free,
        synchronous="FULL" if storage.durability == "full" else "NORMAL",
    )


__all__ = [
    "Accepted",
    "AttemptRecord",
    "DueDelivery",
    "EventFilter",
    "EventPage",
    "Requeued",
    "ServeLock",
    "Store",
    "create_store",
    "serve_lock",
]

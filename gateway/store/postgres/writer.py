"""Group commit for ingest on PostgreSQL. Does I/O.

Webhooks that arrive while a transaction is committing wait for the next one, which takes
all of them: one multi-row INSERT of the events (`ON CONFLICT (dedupe_key) DO NOTHING`, the
dedupe across replicas), one of their deliveries, one NOTIFY, one commit. Every future is
resolved only after that commit, so a 200 always means committed. A few writers run side
by side (each with its own pooled connection) so one slow fsync does not stall the others.
If a batch fails on its data, its jobs are rerun one transaction each so only the bad one
fails; if it fails on the connection, every job in it gets `StoreError("unavailable")`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.errors import StoreError
from gateway.events import Event
from gateway.store.postgres.connection import Connection, PostgresConnection
from gateway.store.postgres.errors import is_connection_error, store_error
from gateway.store.records import Accepted

MAX_BATCH = 1024
WRITERS = 2


def clean(text: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL (SQLite can); a JSON string may carry one (\\u0000).
    The raw body keeps it byte for byte (bytea); only the indexed copies are cleaned."""
    return text.replace("\x00", "\ufffd") if text and "\x00" in text else text


@dataclass(slots=True)
class IngestJob:
    event: Event
    routes: Sequence[tuple[str, str | None]]
    rules: Sequence[str]
    source_ip: str | None
    headers: dict[str, str]
    received_at: float
    future: asyncio.Future[Accepted] = field(default_factory=lambda: _future())


def _future() -> asyncio.Future[Accepted]:
    return asyncio.get_running_loop().create_future()


class IngestWriter:
    def __init__(self, connection: PostgresConnection) -> None:
        self._connection = connection
        self._queue: asyncio.Queue[IngestJob] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"store-ingest-{n}") for n in range(WRITERS)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(StoreError("unavailable", "store closed"))

    async def submit(self, job: IngestJob) -> Accepted:
        if not self._tasks:
            raise StoreError("unavailable", "store not open")
        self._queue.put_nowait(job)
        return await job.future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit(batch)
            except asyncio.CancelledError:
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(StoreError("unavailable", "store closed"))
                raise
            except Exception as exc:  # never let a writer die with requests waiting
                error = store_error(exc)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)

    async def _commit(self, batch: list[IngestJob]) -> None:
        try:
            results = await self._transaction(batch)
        except StoreError:
            raise
        except Exception as exc:
            if is_connection_error(exc) or len(batch) == 1:
                raise
            # one job's data broke the batch: each alone, so only that one fails
            for job in batch:
                try:
                    (result,) = await self._transaction([job])
                    job.future.set_result(result)
                except Exception as alone:
                    job.future.set_exception(store_error(alone))
            return
        for job, result in zip(batch, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)

    async def _transaction(self, batch: list[IngestJob]) -> list[Accepted]:
        async with self._connection.connection() as conn, conn.transaction():
            results = await _insert(conn, batch)
            due = {d for job, r in zip(batch, results, strict=True) if r.delivery_ids
                   for d, _ in job.routes}  # fmt: skip
            if due:
                await self._connection.notify(conn, due)
        self._connection.batches += 1
        self._connection.jobs += len(batch)
        return results


async def _insert(conn: Connection, batch: list[IngestJob]) -> list[Accepted]:
    first: dict[str, IngestJob] = {}  # the first job of each key inserts; later ones are dupes
    for job in batch:
        first.setdefault(job.event.dedupe_key, job)
    fresh = list(first.values())
    inserted = await conn.fetch(
        "INSERT INTO events (dedupe_key, event_type, event_id, journey_key, reference_no,"
        " received_at, source_ip, headers, rules, raw)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
        " $6::float8[], $7::text[], $8::text[], $9::text[], $10::bytea[])"
        " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key",
        [clean(j.event.dedupe_key) for j in fresh],
        [clean(j.event.type) for j in fresh],
        [clean(j.event.event_id) for j in fresh],
        [clean(j.event.journey_key) for j in fresh],
        [clean(j.event.reference_no) for j in fresh],
        [j.received_at for j in fresh],
        [clean(j.source_ip) for j in fresh],
        [json.dumps(j.headers) for j in fresh],
        [json.dumps(list(j.rules)) for j in fresh],
        [j.event.raw for j in fresh],
    )
    new_rows = {r["dedupe_key"]: r["id"] for r in inserted}
    # keys are compared cleaned: that is what the database holds
    by_key = {clean(k) or k: j for k, j in first.items()}
    missing = [k for k in by_key if k not in new_rows]
    existing: dict[str, int] = {}
    if missing:
        rows = await conn.fetch(
            "SELECT id, dedupe_key FROM events WHERE dedupe_key = ANY($1::text[])", missing
        )
        existing = {r["dedupe_key"]: r["id"] for r in rows}
    winners = {id(by_key[k]): row for k, row in new_rows.items()}
    routes = [
        (row, job, destination, rule)
        for job in fresh
        if (row := winners.get(id(job))) is not None
        for destination, rule in job.routes
    ]
    delivery_ids: dict[tuple[int, str], int] = {}
    if routes:
        rows = await conn.fetch(
            "INSERT INTO deliveries (event_row, destination, rule, journey_key, queued_at,"
            " next_attempt_at, updated_at)"
            " SELECT r, d, u, j, q, q, q FROM unnest($1::bigint[], $2::text[], $3::text[],"
            " $4::text[], $5::float8[]) AS t(r, d, u, j, q)"
            " RETURNING id, event_row, destination",
            [row for row, _, _, _ in routes],
            [destination for _, _, destination, _ in routes],
            [rule for _, _, _, rule in routes],
            [clean(job.event.journey_key) for _, job, _, _ in routes],
            [job.received_at for _, job, _, _ in routes],
        )
        delivery_ids = {(r["event_row"], r["destination"]): r["id"] for r in rows}
    results: list[Accepted] = []
    duplicates: list[tuple[int, IngestJob]] = []
    for job in batch:
        key = clean(job.event.dedupe_key) or job.event.dedupe_key
        row = winners.get(id(job))
        if row is not None:
            ids = tuple(delivery_ids[(row, destination)] for destination, _ in job.routes)
            results.append(Accepted("accepted", row, ids))
        else:
            found = new_rows.get(key) or existing.get(key)
            if found is None:  # inserted and deleted (pruned) between the two statements
                raise StoreError("io", "event vanished during ingest")
            results.append(Accepted("duplicate", found))
            duplicates.append((found, job))
    if duplicates:  # rare: one row each, so the console counts them on every replica
        await conn.execute(
            "INSERT INTO duplicates (event_row, received_at, source_ip)"
            " SELECT * FROM unnest($1::bigint[], $2::float8[], $3::text[])",
            [row for row, _ in duplicates],
            [job.received_at for _, job in duplicates],
            [clean(job.source_ip) for _, job in duplicates],
        )
    return results

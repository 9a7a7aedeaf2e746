"""Moving up from SQLite: copy a gateway's SQLite file into the PostgreSQL store. Does I/O.

Events, their deliveries with their state (pending ones stay pending and are sent by the
replicas), the attempt history and the repeated receipts (duplicates, which the console
counts). Idempotent: an event already there (same dedupe key) is not copied twice, nor is
a delivery (same event and destination); the attempts of a delivery are copied only
together with it, and of an event's duplicates only those newer than the latest the
target holds. So running it again (after a crash, or once more after the last SQLite
gateway stopped) copies only what is new. Ids are the target's own: the SQLite ids may
already be taken there.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import StoreError
from gateway.store.postgres.connection import Connection, PostgresConnection
from gateway.store.postgres.writer import clean
from gateway.store.sqlite.schema import migrate

CHUNK = 500


@dataclass(frozen=True, slots=True)
class Copied:
    events: int
    deliveries: int
    attempts: int
    skipped_events: int  # already in the target
    duplicates: int = 0  # repeated receipts of the copied events


def _source(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise StoreError("not_found", f"no SQLite store at {path}")
    try:
        # an older gateway's file gets the current schema first (what its next start would do)
        writable = sqlite3.connect(path, isolation_level=None)
        try:
            migrate(writable)
        finally:
            writable.close()
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        conn.execute("SELECT 1 FROM events LIMIT 1")
    except sqlite3.Error:
        raise StoreError("corrupt", f"{path} is not a gateway SQLite store") from None
    return conn


async def copy_store(path: Path, dsn: str) -> Copied:
    """Open the PostgreSQL store at `dsn` (migrating it), copy `path` into it, close it."""
    from gateway.store.postgres import PostgresStore

    target = PostgresStore(dsn, pool_min=1, pool_max=2, connect_timeout=10.0)
    await target.open()
    try:
        return await copy_from_sqlite(path, target)
    finally:
        await target.close()


async def copy_from_sqlite(path: Path, target: PostgresConnection) -> Copied:
    source = _source(path)
    events = deliveries = attempts = skipped = duplicates = 0
    try:
        last = 0
        while True:
            rows = source.execute(
                "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (last, CHUNK)
            ).fetchall()
            if not rows:
                break
            last = rows[-1]["id"]
            async with target.connection() as conn, conn.transaction():
                counts = await _copy_chunk(source, conn, rows)
            events, deliveries, attempts, duplicates = (
                events + counts[0],
                deliveries + counts[1],
                attempts + counts[2],
                duplicates + counts[3],
            )
            skipped += len(rows) - counts[0]
    finally:
        source.close()
    if deliveries:
        async with target.connection() as conn:
            await target.notify(conn, None)  # running replicas pick the pending ones up
    return Copied(events, deliveries, attempts, skipped, duplicates)


async def _copy_chunk(
    source: sqlite3.Connection, conn: Connection, rows: list[sqlite3.Row]
) -> tuple[int, int, int, int]:
    """One chunk of events with everything that hangs off them, in the caller's transaction:
    (events, deliveries, attempts, duplicates) copied."""
    inserted, event_row = await _copy_events(conn, rows)
    duplicates = await _copy_duplicates(source, conn, event_row)
    deliveries = await _copy_deliveries(source, conn, event_row)
    attempts = await _copy_attempts(source, conn, deliveries)
    return inserted, len(deliveries), attempts, duplicates


async def _copy_events(conn: Connection, rows: list[sqlite3.Row]) -> tuple[int, dict[int, int]]:
    """Inserts the events not there yet; returns how many, and every row's target id (source
    id -> target id), copied now or before."""
    inserted = await conn.fetch(
        "INSERT INTO events (dedupe_key, event_type, event_id, journey_key, reference_no,"
        " received_at, source_ip, headers, rules, raw)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
        " $6::float8[], $7::text[], $8::text[], $9::text[], $10::bytea[])"
        " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
        [clean(r["dedupe_key"]) for r in rows],
        [clean(r["event_type"]) for r in rows],
        [clean(r["event_id"]) for r in rows],
        [clean(r["journey_key"]) for r in rows],
        [clean(r["reference_no"]) for r in rows],
        [r["received_at"] for r in rows],
        [clean(r["source_ip"]) for r in rows],
        [r["headers"] for r in rows],
        [r["rules"] for r in rows],
        [bytes(r["raw"]) for r in rows],
    )
    mapped = await conn.fetch(
        "SELECT id, dedupe_key FROM events WHERE dedupe_key = ANY($1::text[])",
        [clean(r["dedupe_key"]) for r in rows],
    )
    target_row = {r["dedupe_key"]: r["id"] for r in mapped}
    return len(inserted), {r["id"]: target_row[clean(r["dedupe_key"])] for r in rows}


async def _copy_deliveries(
    source: sqlite3.Connection, conn: Connection, event_row: dict[int, int]
) -> dict[int, int]:
    """The deliveries of these events not there yet (same event and destination), with
    their state; returns source id -> target id of those copied now."""
    marks = ",".join("?" * len(event_row))
    old = source.execute(
        f"SELECT * FROM deliveries WHERE event_row IN ({marks}) ORDER BY id", list(event_row)
    ).fetchall()
    if not old:
        return {}
    new = await conn.fetch(
        "INSERT INTO deliveries (event_row, destination, rule, journey_key, status, attempts,"
        " attempt_base, queued_at, next_attempt_at, updated_at, reason, last_error,"
        " first_queued_at)"
        " SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],"
        " $6::int[], $7::int[], $8::float8[], $9::float8[], $10::float8[], $11::text[],"
        " $12::text[], $13::float8[]) ON CONFLICT (event_row, destination) DO NOTHING"
        " RETURNING id, event_row, destination",
        [event_row[d["event_row"]] for d in old],
        [d["destination"] for d in old],
        [d["rule"] for d in old],
        [clean(d["journey_key"]) for d in old],
        [d["status"] for d in old],
        [d["attempts"] for d in old],
        [d["attempt_base"] for d in old],
        [d["queued_at"] for d in old],
        [d["next_attempt_at"] for d in old],
        [d["updated_at"] for d in old],
        [clean(d["reason"]) for d in old],
        [clean(d["last_error"]) for d in old],
        [d["first_queued_at"] for d in old],
    )
    by_pair = {(event_row[d["event_row"]], d["destination"]): d["id"] for d in old}
    return {by_pair[(n["event_row"], n["destination"])]: n["id"] for n in new}


async def _copy_attempts(
    source: sqlite3.Connection, conn: Connection, deliveries: dict[int, int]
) -> int:
    """The attempt history of the deliveries copied now (source id -> target id)."""
    if not deliveries:
        return 0
    marks = ",".join("?" * len(deliveries))
    history = source.execute(
        f"SELECT * FROM attempts WHERE delivery_id IN ({marks}) ORDER BY id", list(deliveries)
    ).fetchall()
    if history:
        await conn.executemany(
            "INSERT INTO attempts (delivery_id, number, started_at, duration, outcome,"
            " reason, status_code, detail, output) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
            [
                (
                    deliveries[a["delivery_id"]],
                    a["number"],
                    a["started_at"],
                    a["duration"],
                    a["outcome"],
                    clean(a["reason"]),
                    a["status_code"],
                    clean(a["detail"]),
                    clean(a["output"]),
                )
                for a in history
            ],
        )
    return len(history)


async def _copy_duplicates(
    source: sqlite3.Connection, conn: Connection, event_row: dict[int, int]
) -> int:
    """The repeated receipts of this chunk's events (source id -> target id) that the target
    does not have yet: all of a newly copied event's, and of an event copied before, those
    received after the latest it holds (a second run, after the SQLite gateway stopped)."""
    if not event_row:
        return 0
    held = await conn.fetch(
        "SELECT event_row, max(received_at) AS latest FROM duplicates"
        " WHERE event_row = ANY($1::bigint[]) GROUP BY event_row",
        list(set(event_row.values())),
    )
    latest = {r["event_row"]: r["latest"] for r in held}
    marks = ",".join("?" * len(event_row))
    receipts = [
        d
        for d in source.execute(
            "SELECT event_row, received_at, source_ip FROM duplicates"
            f" WHERE event_row IN ({marks}) ORDER BY id",
            list(event_row),
        ).fetchall()
        if d["received_at"] > latest.get(event_row[d["event_row"]], float("-inf"))
    ]
    if receipts:
        await conn.executemany(
            "INSERT INTO duplicates (event_row, received_at, source_ip) VALUES ($1, $2, $3)",
            [
                (event_row[d["event_row"]], d["received_at"], clean(d["source_ip"]))
                for d in receipts
            ],
        )
    return len(receipts)

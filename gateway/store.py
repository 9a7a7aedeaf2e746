"""The SQLite store: the only module with SQL. Does I/O.

Writes go through one writer thread that practices *group commit*: it takes whatever jobs
are queued the moment it is free, runs them in one transaction, commits once with
`synchronous=FULL`, and only then resolves every waiting future. If one job fails, the batch
is rolled back and its jobs rerun one transaction each, so only the failing job fails. A webhook's 200 is sent after that commit; under load many
requests share one fsync instead of paying one each. Reads use aiosqlite on a second
connection (WAL lets them run beside the writer), so `serve` and the CLI share this module
and can use the same database at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from gateway.errors import StoreError
from gateway.events import Event

T = TypeVar("T")

MIGRATIONS: tuple[str, ...] = (
    # 1: events, deliveries (the outbox) and the attempt history
    """
    CREATE TABLE events (
        id            INTEGER PRIMARY KEY,
        dedupe_key    TEXT NOT NULL UNIQUE,
        event_type    TEXT NOT NULL,
        event_id      TEXT,
        journey_key   TEXT,
        reference_no  TEXT,
        received_at   REAL NOT NULL,
        source_ip     TEXT,
        headers       TEXT NOT NULL DEFAULT '{}',
        rules         TEXT NOT NULL DEFAULT '[]',
        raw           BLOB NOT NULL
    );
    CREATE INDEX events_received ON events (received_at);
    CREATE INDEX events_type ON events (event_type, received_at);
    CREATE INDEX events_journey ON events (journey_key, received_at);
    CREATE TABLE deliveries (
        id              INTEGER PRIMARY KEY,
        event_row       INTEGER NOT NULL,
        destination     TEXT NOT NULL,
        rule            TEXT,
        journey_key     TEXT,
        status          TEXT NOT NULL DEFAULT 'pending',
        attempts        INTEGER NOT NULL DEFAULT 0,
        queued_at       REAL NOT NULL,
        next_attempt_at REAL NOT NULL,
        updated_at      REAL NOT NULL,
        reason          TEXT,
        last_error      TEXT,
        UNIQUE (event_row, destination)
    );
    CREATE INDEX deliveries_due ON deliveries (destination, next_attempt_at)
        WHERE status = 'pending';
    CREATE INDEX deliveries_journey ON deliveries (destination, journey_key, id)
        WHERE status = 'pending';
    CREATE INDEX deliveries_status ON deliveries (status, updated_at);
    CREATE TABLE attempts (
        id           INTEGER PRIMARY KEY,
        delivery_id  INTEGER NOT NULL,
        number       INTEGER NOT NULL,
        started_at   REAL NOT NULL,
        duration     REAL NOT NULL,
        outcome      TEXT NOT NULL,
        reason       TEXT,
        status_code  INTEGER,
        detail       TEXT,
        output       TEXT
    );
    CREATE INDEX attempts_delivery ON attempts (delivery_id, number);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
    """,
    # 2: attempt numbers keep counting across replays; the budget starts at attempt_base
    """
    ALTER TABLE deliveries ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0;
    """,
    # 3: indexes that cost ingest more than they save the CLI (measured: bench/RESULTS.md);
    # dead deliveries (few, and what operators look for) get a partial index instead
    """
    DROP INDEX events_type;
    DROP INDEX deliveries_status;
    CREATE INDEX deliveries_dead ON deliveries (destination, id) WHERE status = 'dead';
    """,
)

MAX_BATCH = 2048

Job = tuple[Callable[["sqlite3.Connection"], Any], "asyncio.Future[Any]"]
Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


# ---------------------------------------------------------------------------------- records
@dataclass(frozen=True, slots=True)
class Accepted:
    status: str  # "accepted" | "duplicate"
    event_row: int
    delivery_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class DueDelivery:
    id: int
    event_row: int
    destination: str
    attempts: int
    queued_at: float
    raw: bytes
    rule: str | None
    attempt_base: int = 0  # attempts made before the last replay (not counted in the budget)


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    delivery_id: int
    number: int
    started_at: float
    duration: float
    outcome: str  # delivered | retry | dead
    reason: str | None = None
    status_code: int | None = None
    detail: str | None = None
    output: str | None = None
    next_attempt_at: float | None = None  # for outcome == "retry"


# ------------------------------------------------------------------------------ SQL (sync)
def _connect(path: Path, busy_timeout: float, max_size: int | None) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: the WAL is fsynced at every commit, so a 200 survives power loss, not only a crash
    conn.execute("PRAGMA synchronous=FULL")
    if max_size:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={max(16, max_size // page_size)}")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StoreError("schema_too_new", f"database schema {version} is newer than this gateway")
    for number in range(version, len(MIGRATIONS)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


def _insert_event(
    conn: sqlite3.Connection,
    event: Event,
    routes: Sequence[tuple[str, str | None]],
    rules: Sequence[str],
    received_at: float,
    source_ip: str | None,
    headers: dict[str, str],
) -> Accepted:
    cursor = conn.execute(
        "INSERT OR IGNORE INTO events (dedupe_key, event_type, event_id, journey_key, reference_no,"
        " received_at, source_ip, headers, rules, raw) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            event.dedupe_key,
            event.type,
            event.event_id,
            event.journey_key,
            event.reference_no,
            received_at,
            source_ip,
            json.dumps(headers),
            json.dumps(list(rules)),
            event.raw,
        ),
    )
    if cursor.rowcount == 0:
        row = conn.execute(
            "SELECT id FROM events WHERE dedupe_key = ?", (event.dedupe_key,)
        ).fetchone()
        return Accepted("duplicate", row[0])
    event_row = cursor.lastrowid
    assert event_row is not None
    ids = []
    for destination, rule in routes:
        cursor = conn.execute(
            "INSERT INTO deliveries (event_row, destination, rule, journey_key, queued_at,"
            " next_attempt_at, updated_at) VALUES (?,?,?,?,?,?,?)",
            (
                event_row,
                destination,
                rule,
                event.journey_key,
                received_at,
                received_at,
                received_at,
            ),
        )
        ids.append(cursor.lastrowid or 0)
    return Accepted("accepted", event_row, tuple(ids))


def _record_attempts(
    conn: sqlite3.Connection, records: Sequence[AttemptRecord], now: float
) -> None:
    conn.executemany(
        "INSERT INTO attempts (delivery_id, number, started_at, duration, outcome, reason,"
        " status_code, detail, output) VALUES (?,?,?,?,?,?,?,?,?)",
        [
            (
                r.delivery_id,
                r.number,
                r.started_at,
                r.duration,
                r.outcome,
                r.reason,
                r.status_code,
                r.detail,
                r.output,
            )
            for r in records
        ],
    )
    for r in records:
        status = {"delivered": "delivered", "dead": "dead"}.get(r.outcome, "pending")
        # `status = 'pending'` guards against a replay or expiry that happened meanwhile
        conn.execute(
            "UPDATE deliveries SET status = ?, attempts = max(attempts, ?), updated_at = ?,"
            " next_attempt_at = coalesce(?, next_attempt_at), reason = ?, last_error = ?"
            " WHERE id = ? AND status = 'pending'",
            (status, r.number, now, r.next_attempt_at, r.reason, r.detail, r.delivery_id),
        )


# -------------------------------------------------------------------------- writer thread
class _Writer:
    """One thread, one connection, group commit. Jobs are `fn(conn) -> result`."""

    def __init__(self, path: Path, busy_timeout: float, max_size: int | None) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._max_size = max_size
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]] | None
        ] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0
        self.jobs = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._conn = _connect(self._path, self._busy_timeout, self._max_size)
        migrate(self._conn)
        self._thread.start()

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        assert self._loop is not None
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put((fn, future))
        return future

    def stop(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            batch = [job]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._jobs.put(None)  # finish this batch, then stop
                    break
                batch.append(nxt)
            try:
                outcomes = self._commit(batch)
            except BaseException as exc:  # never let the writer die with requests waiting
                error = StoreError("io", f"store writer failed: {type(exc).__name__}")
                outcomes = [(future, None, error) for _, future in batch]
            assert self._loop is not None
            with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                self._loop.call_soon_threadsafe(_resolve, outcomes)

    def _commit(self, batch: list[Job]) -> list[Outcome]:
        """One transaction for the whole batch. Jobs run without savepoints (they cost as much
        as the inserts); if one job fails, the batch is rolled back and every job is run
        again in a transaction of its own, so only the failing one gets the error."""
        try:
            if self._conn is None:
                self._conn = _connect(self._path, self._busy_timeout, self._max_size)
            conn = self._conn
            try:
                return self._transaction(conn, batch)
            except _JobFailed:
                pass
        except sqlite3.Error as exc:
            return self._fail_all(batch, exc)
        done: list[Outcome] = []
        for position, job in enumerate(batch):
            try:
                done += self._transaction(conn, [job])
            except sqlite3.Error as exc:  # jobs already committed keep their answer
                return done + self._fail_all(batch[position:], exc)
        return done

    def _transaction(self, conn: sqlite3.Connection, jobs: list[Job]) -> list[Outcome]:
        conn.execute("BEGIN IMMEDIATE")
        outcomes: list[Outcome] = []
        for fn, future in jobs:
            try:
                outcomes.append((future, fn(conn), None))
            except Exception as exc:
                conn.execute("ROLLBACK")
                if len(jobs) > 1:
                    raise _JobFailed from exc
                error = _store_error(exc) if isinstance(exc, sqlite3.Error) else exc
                return [(future, None, error)]
            except BaseException:
                conn.execute("ROLLBACK")  # leave no transaction open for the next batch
                raise
        conn.execute("COMMIT")
        self.batches += 1
        self.jobs += len(jobs)
        return outcomes

    def _fail_all(self, batch: list[Job], exc: sqlite3.Error) -> list[Outcome]:
        error = _store_error(exc)
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if error.reason not in ("locked", "full"):
                # I/O error, corruption, read-only: reopen on the next batch
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
                self._conn = None
        return [(future, None, error) for _, future in batch]


class _JobFailed(Exception):
    """One job of a batch raised; the batch was rolled back."""


def _resolve(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _store_error(exc: sqlite3.Error) -> StoreError:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return StoreError("locked", "database is locked by another writer")
    if "full" in text:
        return StoreError("full", "database or disk is full")
    if "readonly" in text or "read-only" in text:
        return StoreError("read_only", "database is read-only")
    if "malformed" in text or "not a database" in text:
        return StoreError("corrupt", "database file is corrupt")
    return StoreError("io", f"database error: {type(exc).__name__}")


# ------------------------------------------------------------------------------------ Store
class Store:
    def __init__(self, path: Path, busy_timeout: float = 5.0, max_size: int | None = None) -> None:
        self.path = path
        self._writer = _Writer(path, busy_timeout, max_size)
        self._busy_timeout = busy_timeout
        self._reader: aiosqlite.Connection | None = None

    async def open(self) -> None:
        try:
            self._writer.start(asyncio.get_running_loop())
            self._reader = await aiosqlite.connect(self.path, timeout=self._busy_timeout)
            await self._reader.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            raise _store_error(exc) from None

    async def close(self) -> None:
        await asyncio.to_thread(self._writer.stop)
        if self._reader is not None:
            await self._reader.close()
            self._reader = None

    @property
    def writer_stats(self) -> tuple[int, int]:
        return self._writer.batches, self._writer.jobs

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` inside the next group commit; returns once that commit is durable."""
        return await self._writer.submit(fn)

    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        assert self._reader is not None, "store not open"
        try:
            self._reader.row_factory = sqlite3.Row
            async with self._reader.execute(sql, params) as cursor:
                return list(await cursor.fetchall())
        except sqlite3.Error as exc:
            raise _store_error(exc) from None

    # ---- ingest ------------------------------------------------------------------------
    async def accept(
        self,
        event: Event,
        routes: Sequence[tuple[str, str | None]],
        rules: Sequence[str],
        source_ip: str | None,
        headers: dict[str, str],
        received_at: float | None = None,
    ) -> Accepted:
        at = time.time() if received_at is None else received_at
        return await self.write(
            lambda conn: _insert_event(conn, event, routes, rules, at, source_ip, headers)
        )

    async def import_events(
        self, events: Iterable[Event], received_at: float, destination: str | None = None
    ) -> int:
        """Bulk-load history (benchmarks, migrations from another tool): events, each with one
        already-delivered delivery when `destination` is given. Duplicates are skipped."""
        batch = list(events)

        def run(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO events (dedupe_key, event_type, event_id, journey_key,"
                " reference_no, received_at, raw) VALUES (?,?,?,?,?,?,?)",
                [
                    (
                        e.dedupe_key,
                        e.type,
                        e.event_id,
                        e.journey_key,
                        e.reference_no,
                        received_at,
                        e.raw,
                    )
                    for e in batch
                ],
            )
            inserted = conn.total_changes - before
            if destination is not None:
                conn.executemany(
                    "INSERT OR IGNORE INTO deliveries (event_row, destination, journey_key, status,"
                    " attempts, queued_at, next_attempt_at, updated_at)"
                    " SELECT id, ?, journey_key, 'delivered', 1, ?, ?, ? FROM events WHERE dedupe_key = ?",
                    [
                        (destination, received_at, received_at, received_at, e.dedupe_key)
                        for e in batch
                    ],
                )
            return inserted

        return await self.write(run)

    async def heartbeat(self) -> None:
        now = time.time()
        await self.write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('heartbeat', ?)", (str(now),)
            )
        )

    # ---- delivery ----------------------------------------------------------------------
    async def due(
        self,
        destination: str,
        now: float,
        limit: int,
        ordered: bool,
        exclude: Iterable[int] = (),
    ) -> list[DueDelivery]:
        """Pending deliveries due by `now`, oldest first; with `ordered`, only the first
        pending one of each journey. `exclude`: ids already in flight (not fetched again)."""
        skip = json.dumps(sorted(exclude))
        order_clause = (
            " AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.status = 'pending'"
            " AND p.destination = d.destination AND p.journey_key = d.journey_key AND p.id < d.id)"
            if ordered
            else ""
        )
        rows = await self.read(
            "SELECT d.id, d.event_row, d.destination, d.attempts, d.queued_at, d.rule, e.raw,"
            " d.attempt_base"
            " FROM deliveries d JOIN events e ON e.id = d.event_row"
            " WHERE d.status = 'pending' AND d.destination = ? AND d.next_attempt_at <= ?"
            " AND d.id NOT IN (SELECT value FROM json_each(?))"
            + order_clause
            + " ORDER BY d.next_attempt_at, d.id LIMIT ?",
            (destination, now, skip, limit),
        )
        return [
            DueDelivery(
                r["id"],
                r["event_row"],
                r["destination"],
                r["attempts"],
                r["queued_at"],
                r["raw"],
                r["rule"],
                r["attempt_base"],
            )
            for r in rows
        ]

    async def record(self, records: Sequence[AttemptRecord]) -> None:
        now = time.time()
        await self.write(lambda conn: _record_attempts(conn, records, now))

    async def expire(
        self,
        max_age: dict[str, float],
        default_max_age: float,
        now: float,
        in_flight: set[int] | None = None,
    ) -> dict[str, int]:
        """Pending deliveries past their destination's max_age become dead (reason max_age);
        those with an attempt in flight are left to that attempt. Counts per destination."""
        skip = sorted(in_flight or ())
        skip_clause = f" AND id NOT IN ({','.join('?' * len(skip))})" if skip else ""

        def run(conn: sqlite3.Connection) -> dict[str, int]:
            expired: dict[str, int] = {}
            stale = [(destination, now - age) for destination, age in max_age.items()]
            for destination, cutoff in stale:
                count = conn.execute(
                    "UPDATE deliveries SET status = 'dead', reason = 'max_age', updated_at = ?"
                    " WHERE status = 'pending' AND destination = ? AND queued_at < ?" + skip_clause,
                    (now, destination, cutoff, *skip),
                ).rowcount
                if count:
                    expired[destination] = count
            # destinations no longer configured (removed by a reload) use the default max_age
            placeholders = ",".join("?" * len(max_age)) or "''"
            rows = conn.execute(
                "SELECT destination, count(*) FROM deliveries WHERE status = 'pending'"
                f" AND destination NOT IN ({placeholders}) AND queued_at < ? GROUP BY destination",
                (*max_age, now - default_max_age),
            ).fetchall()
            for destination, count in rows:
                conn.execute(
                    "UPDATE deliveries SET status = 'dead', reason = 'max_age', updated_at = ?"
                    " WHERE status = 'pending' AND destination = ? AND queued_at < ?",
                    (now, destination, now - default_max_age),
                )
                expired[destination] = count
            return expired

        return await self.write(run)

    async def pending_stats(self) -> list[sqlite3.Row]:
        return await self.read(
            "SELECT destination, count(*) AS pending, min(queued_at) AS oldest FROM deliveries"
            " WHERE status = 'pending' GROUP BY destination"
        )

    # ---- replay ------------------------------------------------------------------------
    async def replay(
        self,
        *,
        delivery_id: int | None = None,
        event: str | None = None,
        dead: bool = False,
        destination: str | None = None,
        since: float | None = None,
    ) -> int:
        """Re-queue matching deliveries; pending ones are made due now, never duplicated."""
        where: list[str] = ["1=1"]
        params: list[Any] = []
        if delivery_id is not None:
            where.append("d.id = ?")
            params.append(delivery_id)
        if event is not None:
            where.append(
                "d.event_row IN (SELECT id FROM events WHERE dedupe_key = ? OR event_id = ? OR CAST(id AS TEXT) = ?)"
            )
            params += [event, event, event]
        if dead:
            where.append("d.status = 'dead'")
        if destination is not None:
            where.append("d.destination = ?")
            params.append(destination)
        if since is not None:
            where.append("d.queued_at >= ?")
            params.append(since)
        now = time.time()

        def run(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE deliveries AS d SET status = 'pending', next_attempt_at = ?, updated_at = ?,"
                " attempt_base = CASE WHEN status = 'pending' THEN attempt_base ELSE attempts END,"
                " queued_at = CASE WHEN status = 'pending' THEN queued_at ELSE ? END,"
                " reason = CASE WHEN status = 'pending' THEN reason ELSE NULL END"
                " WHERE " + " AND ".join(where),
                (now, now, now, *params),
            ).rowcount

        return await self.write(run)

    async def add_routes(self, additions: Iterable[tuple[int, str, str | None, str | None]]) -> int:
        """(event_row, destination, rule, journey_key) rows; existing pairs are left alone."""
        rows = list(additions)
        now = time.time()

        def run(conn: sqlite3.Connection) -> int:
            count = 0
            for event_row, destination, rule, journey_key in rows:
                count += conn.execute(
                    "INSERT OR IGNORE INTO deliveries (event_row, destination, rule, journey_key,"
                    " queued_at, next_attempt_at, updated_at) VALUES (?,?,?,?,?,?,?)",
                    (event_row, destination, rule, journey_key, now, now, now),
                ).rowcount
            return count

        return await self.write(run)

    # ---- retention ---------------------------------------------------------------------
    async def prune(self, cutoff: float, batch: int = 500) -> int:
        """Delete up to `batch` events older than cutoff whose deliveries are all finished."""

        def run(conn: sqlite3.Connection) -> int:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM events e WHERE received_at < ? AND NOT EXISTS"
                    " (SELECT 1 FROM deliveries d WHERE d.event_row = e.id AND d.status = 'pending')"
                    " ORDER BY received_at LIMIT ?",
                    (cutoff, batch),
                )
            ]
            if not ids:
                return 0
            marks = ",".join("?" * len(ids))
            conn.execute(
                f"DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_row IN ({marks}))",
                ids,
            )
            conn.execute(f"DELETE FROM deliveries WHERE event_row IN ({marks})", ids)
            conn.execute(f"DELETE FROM events WHERE id IN ({marks})", ids)
            return len(ids)

        return await self.write(run)

    # ---- queries for the CLI -----------------------------------------------------------
    async def list_events(
        self,
        *,
        event_type: str | None = None,
        since: float | None = None,
        journey: str | None = None,
        status: str | None = None,
        destination: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Newest first. `status` / `destination`: events with such a delivery."""
        where, params = _filters(
            ("event_type = ?", event_type),
            ("received_at >= ?", since),
            ("journey_key = ?", journey),
            (
                "EXISTS (SELECT 1 FROM deliveries s WHERE s.event_row = e.id AND s.status = ?)",
                status,
            ),
            (
                "EXISTS (SELECT 1 FROM deliveries s WHERE s.event_row = e.id"
                " AND s.destination = ?)",
                destination,
            ),
        )
        rows = await self.read(
            "SELECT e.id, e.dedupe_key, e.event_type, e.journey_key, e.reference_no, e.received_at,"
            " e.source_ip, e.rules,"
            " (SELECT count(*) FROM deliveries d WHERE d.event_row = e.id) AS deliveries,"
            " (SELECT count(*) FROM deliveries d WHERE d.event_row = e.id AND d.status = 'pending') AS pending"
            f" FROM events e WHERE {where} ORDER BY e.id DESC LIMIT ?",
            (*params, limit),
        )
        return [{**dict(r), "rules": json.loads(r["rules"])} for r in rows]

    async def get_event(self, key: str) -> dict[str, Any] | None:
        rows = await self.read(
            "SELECT * FROM events WHERE dedupe_key = ? OR event_id = ? OR CAST(id AS TEXT) = ?"
            " ORDER BY id DESC LIMIT 1",
            (key, key, key),
        )
        if not rows:
            return None
        row = dict(rows[0])
        row["headers"] = json.loads(row["headers"])
        row["rules"] = json.loads(row["rules"])
        raw = row.pop("raw")
        try:
            row["payload"] = json.loads(raw)
        except ValueError:
            row["payload"] = raw.decode("utf-8", "replace")
        row["deliveries"] = await self.list_deliveries(event_row=row["id"], limit=1000)
        return row

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
    ) -> list[dict[str, Any]]:
        where, params = _filters(
            ("d.status = ?", status),
            ("d.destination = ?", destination),
            ("e.event_type = ?", event_type),
            ("d.event_row = ?", event_row),
            ("d.journey_key = ?", journey),
            ("d.queued_at >= ?", since),
        )
        rows = await self.read(
            "SELECT d.id, d.event_row, e.dedupe_key, e.event_type, d.destination, d.rule, d.journey_key,"
            " d.status, d.attempts, d.queued_at, d.next_attempt_at, d.updated_at, d.reason, d.last_error"
            f" FROM deliveries d JOIN events e ON e.id = d.event_row WHERE {where}"
            " ORDER BY d.id DESC LIMIT ?",
            (*params, limit),
        )
        return [dict(r) for r in rows]

    async def get_delivery(self, delivery_id: int) -> dict[str, Any] | None:
        rows = await self.read(
            "SELECT d.*, e.dedupe_key, e.event_type FROM deliveries d JOIN events e ON e.id = d.event_row"
            " WHERE d.id = ?",
            (delivery_id,),
        )
        if not rows:
            return None
        row = dict(rows[0])
        attempts = await self.read(
            "SELECT number, started_at, duration, outcome, reason, status_code, detail, output"
            " FROM attempts WHERE delivery_id = ? ORDER BY number, id",
            (delivery_id,),
        )
        row["attempt_history"] = [dict(a) for a in attempts]
        return row

    async def events_for_reroute(
        self, *, event: str | None = None, since: float | None = None, event_type: str | None = None
    ) -> list[tuple[int, bytes]]:
        where, params = _filters(
            (
                "(dedupe_key = ? OR event_id = ? OR CAST(id AS TEXT) = ?)",
                (event, event, event) if event else None,
            ),
            ("received_at >= ?", since),
            ("event_type = ?", event_type),
        )
        rows = await self.read(f"SELECT id, raw FROM events WHERE {where} ORDER BY id", params)
        return [(r["id"], r["raw"]) for r in rows]

    async def existing_routes(self, event_rows: Sequence[int]) -> set[tuple[int, str]]:
        found: set[tuple[int, str]] = set()
        for start in range(0, len(event_rows), 500):
            chunk = event_rows[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = await self.read(
                f"SELECT event_row, destination FROM deliveries WHERE event_row IN ({marks})", chunk
            )
            found.update((r[0], r[1]) for r in rows)
        return found


def _filters(*pairs: tuple[str, Any]) -> tuple[str, list[Any]]:
    clauses: list[str] = ["1=1"]
    params: list[Any] = []
    for clause, value in pairs:
        if value is None:
            continue
        clauses.append(clause)
        if isinstance(value, tuple):
            params.extend(value)
        else:
            params.append(value)
    return " AND ".join(clauses), params

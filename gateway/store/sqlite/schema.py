"""The SQLite schema, its migrations and how a connection is opened. Does I/O."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from gateway.errors import StoreError

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
    # 4: a replay restarts queued_at (max_age counts from it); the first one is kept here
    # (NULL: never replayed, queued_at is the original)
    """
    ALTER TABLE deliveries ADD COLUMN first_queued_at REAL;
    """,
    # 5: the console. Duplicates are counted where every replica sees them (one row per
    # repeated webhook: rare, so the hot path of new events is untouched); operators look
    # events up by the customer's reference number, which had no index
    """
    CREATE TABLE duplicates (
        id          INTEGER PRIMARY KEY,
        event_row   INTEGER NOT NULL,
        received_at REAL NOT NULL,
        source_ip   TEXT
    );
    CREATE INDEX duplicates_received ON duplicates (received_at);
    CREATE INDEX duplicates_event ON duplicates (event_row);
    CREATE INDEX events_reference ON events (reference_no);
    """,
)


def prepare_folder(path: Path) -> None:
    """The database's folder, each missing level created 0700: the events hold personal
    data (names, document numbers) that no other local user should read."""
    missing = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for level in reversed(missing):
        with contextlib.suppress(FileExistsError):
            level.mkdir(mode=0o700)


def connect(
    path: Path, busy_timeout: float, max_size: int | None, synchronous: str = "FULL"
) -> sqlite3.Connection:
    prepare_folder(path)
    # created 0600 before SQLite opens it: SQLite gives the -wal and -shm files the mode of
    # the database file (it would create all three 0644)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL (the default): the WAL is fsynced at every commit, so a 200 survives power loss,
    # not only a crash. NORMAL (`storage.durability: process`): the WAL reaches the OS at
    # every commit and is fsynced at checkpoints; a crash or kill -9 of the gateway loses
    # nothing, a power loss or kernel crash may lose the last commits.
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError(f"synchronous={synchronous!r}")
    conn.execute(f"PRAGMA synchronous={synchronous}")
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

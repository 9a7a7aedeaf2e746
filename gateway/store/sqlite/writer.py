"""The group-commit writer: one thread owns the write connection. Does I/O.

It takes whatever jobs are queued the moment it is free, runs them in one transaction,
commits once with `synchronous=FULL`, and only then resolves every waiting future. If one
job fails, the batch is rolled back and its jobs rerun one transaction each, so only the
failing job fails. Under load many requests share one fsync instead of paying one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import StoreError
from gateway.store.sqlite.schema import connect, migrate

T = TypeVar("T")

MAX_BATCH = 2048

Job = tuple[Callable[["sqlite3.Connection"], Any], "asyncio.Future[Any]"]
Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


class GroupCommitWriter:
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
        self._conn = connect(self._path, self._busy_timeout, self._max_size)
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
                self._conn = connect(self._path, self._busy_timeout, self._max_size)
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
                error = store_error(exc) if isinstance(exc, sqlite3.Error) else exc
                return [(future, None, error)]
            except BaseException:
                conn.execute("ROLLBACK")  # leave no transaction open for the next batch
                raise
        conn.execute("COMMIT")
        self.batches += 1
        self.jobs += len(jobs)
        return outcomes

    def _fail_all(self, batch: list[Job], exc: sqlite3.Error) -> list[Outcome]:
        error = store_error(exc)
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


def store_error(exc: sqlite3.Error) -> StoreError:
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

"""The group-commit writer: one thread owns the write connection. Does I/O.

It takes whatever jobs are queued the moment it is free (and, while webhooks arrive
together, lingers a fraction of a millisecond for the ones on their way: see `_adapt`),
runs them in one transaction, commits once with `synchronous=FULL`, and only then resolves
every waiting future. If one
job fails, the batch is rolled back and its jobs rerun one transaction each, so only the
failing job fails. Under load many requests share one fsync instead of paying one each.

A job is either a function of the connection or a `Batched` item: consecutive items of the
same runner are handed to it together (one `executemany` for a whole batch of accepts
instead of a few statements per request). Their parameters are built on the submitting
side, so that work overlaps the writer's fsync of the previous batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from gateway.errors import StoreError
from gateway.store.sqlite.schema import connect, migrate

T = TypeVar("T")
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

log = logging.getLogger("gateway.store")

MAX_BATCH = 2048
#: While webhooks arrive together, the writer waits up to LINGER for each further job it
#: expects, LINGER_MAX in all, before it commits: a commit costs ~400 us of CPU whatever it
#: holds, and at 10 connections twice the jobs per commit cut the CPU per webhook by ~17%
#: and raised the rate by ~18% (bench/RESULTS.md), for at most a millisecond more per
#: answer by the writer's clock, plus the wait for the GIL when a job wakes it while the
#: event loop runs Python (the writer waits for the GIL around every SQLite call anyway;
#: p50 fell and p99 held in the bench). After a batch of one (a quiet gateway) it never
#: waits.
LINGER = 0.0002
LINGER_MAX = 0.001
#: batches that reached the expected size before the writer tries for one job more
PROBE_EVERY = 8

Job = tuple[Callable[["sqlite3.Connection"], Any], "asyncio.Future[Any]"]
Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


#: how often the loud error about a deleted database is repeated while it lasts
DELETED_LOG_INTERVAL = 60.0

FileIdentity = tuple[tuple[int, int] | None, ...]


class Batched(Generic[ItemT, ResultT]):
    """One job of a kind the writer runs many at a time: `runner(conn, items)` returns one
    result per item, in order, or raises (then each item is rerun on its own)."""

    __slots__ = ("item", "runner")

    def __init__(
        self, runner: Callable[[sqlite3.Connection, list[ItemT]], list[ResultT]], item: ItemT
    ) -> None:
        self.runner = runner
        self.item = item

    def __call__(self, conn: sqlite3.Connection) -> ResultT:
        return self.runner(conn, [self.item])[0]


class GroupCommitWriter:
    """One thread, one connection, group commit. Jobs are `fn(conn) -> result`.

    Before and after every commit the writer checks that the database path still names the
    file it has open (device and inode of the database file): a database deleted or
    replaced under a running gateway would otherwise take commits into unlinked files, and
    lose them all at the next start. Then every write fails with reason `deleted` (503, not
    ready) until the file is back or the gateway restarts.
    """

    def __init__(
        self,
        path: Path,
        busy_timeout: float,
        max_size: int | None,
        synchronous: str = "FULL",
        linger: tuple[float, float] = (LINGER, LINGER_MAX),
    ) -> None:
        self._path = path
        self._linger, self._linger_max = linger
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._max_size = max_size
        #: jobs reach the writer in lists, one per turn of the event loop (see `submit`)
        self._jobs: queue.SimpleQueue[list[Job] | None] = queue.SimpleQueue()
        self._handover: list[Job] = []
        self._carry: list[Job] = []  # the writer thread's: jobs over MAX_BATCH, next batch
        self._closed = False
        self._identity: FileIdentity = ()
        self._deleted_logged_at = 0.0
        #: the last real write (not a heartbeat) failed because the store is full; a
        #: heartbeat that replaces one row still fits, so readiness asks this instead
        self.full = False
        self._probes: set[asyncio.Future[Any]] = set()
        self._conn: sqlite3.Connection | None = None
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0
        self.jobs = 0
        self._expect = 0  # jobs the next batch lingers for (see _adapt)
        self._full_in_a_row = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._conn = connect(self._path, self._busy_timeout, self._max_size, self._synchronous)
        migrate(self._conn)
        self._identity = self._files()
        self._thread.start()

    def submit(
        self, fn: Callable[[sqlite3.Connection], T], *, probe: bool = False
    ) -> asyncio.Future[T]:
        """Queue a job; `probe` marks a heartbeat, whose success says nothing about space."""
        assert self._loop is not None
        future: asyncio.Future[T] = self._loop.create_future()
        if self._closed:  # the thread is stopping or gone: nothing would ever answer
            future.set_exception(StoreError("closed", "the store is closed"))
            return future
        if probe:
            self._probes.add(future)
            future.add_done_callback(self._probes.discard)
        # handed over once per turn of the loop, all together: every put that finds the
        # writer waiting wakes its thread, which then only waits for the GIL the loop holds
        if not self._handover:
            self._loop.call_soon(self.hand_over)
        self._handover.append((fn, future))
        return future

    def close_soon(self) -> None:
        """On the loop, before `stop`: jobs submitted so far go to the writer, later ones
        fail at once instead of waiting for a thread that has stopped."""
        self.hand_over()
        self._closed = True

    def hand_over(self) -> None:
        """Give the writer the jobs submitted this turn now (`submit` schedules it; `stop`'s
        caller runs it first, so no job submitted before the stop is left behind)."""
        jobs, self._handover = self._handover, []
        if jobs:
            self._jobs.put(jobs)

    # ---- is the path still our database? ------------------------------------------------
    def _files(self) -> FileIdentity:
        identity: list[tuple[int, int] | None] = []
        # the database file only: SQLite itself removes and recreates the -wal file at
        # times (it did so after a "database or disk is full" error)
        for path in (self._path,):
            try:
                info = os.stat(path)
            except FileNotFoundError:
                identity.append(None)
            else:
                identity.append((info.st_dev, info.st_ino))
        return tuple(identity)

    def _lost(self) -> bool:
        """True when the path no longer names the file this writer has open. Two stat calls
        per batch (before and after its commit), shared by every job of it."""
        if not self._identity:
            return False
        current = self._files()
        lost = any(
            then is not None and now != then
            for then, now in zip(self._identity, current, strict=True)
        )
        if lost and time.monotonic() - self._deleted_logged_at >= DELETED_LOG_INTERVAL:
            self._deleted_logged_at = time.monotonic()
            log.error(
                "the database file was deleted or replaced while the gateway runs: nothing "
                "can be stored (webhooks get 503, /readyz is not ready); put the file back, "
                "or restart the gateway (events and pending deliveries in the deleted file "
                "are then lost)",
                extra={"fields": {"path": str(self._path), "reason": "deleted"}},
            )
        return lost

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
            if self._carry:  # what the last batch had no room for goes first
                jobs, self._carry = self._carry, []
            else:
                queued = self._jobs.get()
                if queued is None:
                    return
                jobs = queued
            batch = self._gather(jobs)
            outcomes: list[Outcome]
            try:
                if self._lost():
                    outcomes = [(future, None, _deleted()) for _, future in batch]
                else:
                    outcomes = self._commit(batch)
                    if self._lost():  # deleted during the commit: it went nowhere lasting
                        outcomes = [(future, None, _deleted()) for _, future in batch]
            except BaseException as exc:  # never let the writer die with requests waiting
                error = StoreError("io", f"store writer failed: {type(exc).__name__}")
                outcomes = [(future, None, error) for _, future in batch]
            self._note_space(outcomes)
            assert self._loop is not None
            with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                self._loop.call_soon_threadsafe(_resolve, outcomes)

    def _gather(self, first: list[Job]) -> list[Job]:
        """`first` and whatever is queued; while webhooks arrive together, also the ones that
        come within LINGER of each other, until the batch holds `_expect` jobs."""
        batch = self._take(first, [])
        deadline = time.monotonic() + self._linger_max
        timed_out = False
        while len(batch) < MAX_BATCH and not self._carry:
            wait = 0.0
            if len(batch) < self._expect:
                wait = min(self._linger, deadline - time.monotonic())
            try:
                jobs = self._jobs.get(timeout=wait) if wait > 0 else self._jobs.get_nowait()
            except queue.Empty:
                timed_out = wait > 0
                break
            if jobs is None:
                self._jobs.put(None)  # finish this batch, then stop
                break
            batch = self._take(jobs, batch)
        self._adapt(len(batch), timed_out)
        return batch

    def _take(self, jobs: list[Job], batch: list[Job]) -> list[Job]:
        """`batch` with as many of `jobs` as fit under MAX_BATCH; the rest waits in
        `_carry` for the next batch (a turn of the loop can hand over thousands)."""
        room = MAX_BATCH - len(batch)
        if len(jobs) > room:
            self._carry = jobs[room:]
            jobs = jobs[:room]
        return batch + jobs if batch else jobs

    def _adapt(self, size: int, timed_out: bool) -> None:
        """How many jobs the next batch waits for. A lone job: none (a quiet gateway never
        waits). Waited in vain: what came (waiting for more than the concurrency only idles
        the CPU until the last gap passes). More than expected: one more next time. Just as
        many: the same, and every PROBE_EVERY batches one more, so it follows the load up."""
        if size <= 1:
            self._expect = 0
        elif timed_out:
            self._expect = size
            self._full_in_a_row = 0
        elif size > self._expect:
            self._expect = size + 1
        else:
            self._full_in_a_row += 1
            if self._full_in_a_row >= PROBE_EVERY:
                self._full_in_a_row = 0
                self._expect += 1

    def _note_space(self, outcomes: list[Outcome]) -> None:
        real = [(future, error) for future, _, error in outcomes if future not in self._probes]
        if any(isinstance(e, StoreError) and e.reason == "full" for _, e in real):
            self.full = True
        elif any(error is None for _, error in real):
            self.full = False

    def _commit(self, batch: list[Job]) -> list[Outcome]:
        """One transaction for the whole batch. Jobs run without savepoints (they cost as much
        as the inserts); if one job fails, the batch is rolled back and every job is run
        again in a transaction of its own, so only the failing one gets the error."""
        try:
            if self._conn is None:
                self._conn = connect(
                    self._path, self._busy_timeout, self._max_size, self._synchronous
                )
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
        count = len(jobs)
        position = 0
        while position < count:
            fn, future = jobs[position]
            try:
                if isinstance(fn, Batched):
                    # this item and the following ones of the same runner, in one call
                    runner = fn.runner
                    end = position + 1
                    while end < count:
                        nxt = jobs[end][0]
                        if not isinstance(nxt, Batched) or nxt.runner is not runner:
                            break
                        end += 1
                    group = jobs[position:end]
                    results = runner(conn, [cast(Batched[Any, Any], job[0]).item for job in group])
                    outcomes += [
                        (job[1], result, None) for job, result in zip(group, results, strict=True)
                    ]
                    position = end
                else:
                    outcomes.append((future, fn(conn), None))
                    position += 1
            except Exception as exc:
                # SQLite may have rolled back already (it does on SQLITE_FULL): a second
                # ROLLBACK raised "no transaction is active" and replaced the real error,
                # so a full store was reported as an I/O error and the connection reopened
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if count > 1:
                    raise _JobFailed from exc
                error = store_error(exc) if isinstance(exc, sqlite3.Error) else exc
                return [(future, None, error)]
            except BaseException:
                if conn.in_transaction:  # leave no transaction open for the next batch
                    conn.execute("ROLLBACK")
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


def _deleted() -> StoreError:
    return StoreError("deleted", "the database file was deleted or replaced")


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

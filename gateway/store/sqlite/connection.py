"""The SQLite store's two connections: the group-commit writer for every change, and a
read-only aiosqlite connection beside it (WAL lets reads run while the writer commits), so
`serve` and the CLI can use the same database at the same time. Does I/O."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from gateway.store.recent import RecentEvents
from gateway.store.sqlite.writer import GroupCommitWriter, store_error

T = TypeVar("T")

CommitListener = Callable[[Iterable[str] | None], None]


class SqliteConnection:
    shared = False  # one process owns the file: no claims needed

    def __init__(
        self,
        path: Path,
        busy_timeout: float = 5.0,
        max_size: int | None = None,
        min_free: int = 0,
        synchronous: str = "FULL",
    ) -> None:
        self.path = path
        self._min_free = min_free
        self._writer = GroupCommitWriter(path, busy_timeout, max_size, synchronous)
        self._busy_timeout = busy_timeout
        self._reader: aiosqlite.Connection | None = None
        self._listeners: list[CommitListener] = []
        self.recent = RecentEvents()  # this process's events just accepted, for delivery
        self._rate_slots: dict[str, float] = {}  # destination -> monotonic time of next send

    def listen(self, listener: CommitListener) -> Callable[[], None]:
        """`listener(destinations)` after each commit that made deliveries due (None: any
        destination may have some); returns the undo."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _made_due(self, destinations: Iterable[str] | None) -> None:
        for listener in self._listeners:
            listener(destinations)

    async def open(self) -> None:
        try:
            self._writer.start(asyncio.get_running_loop())
            self._reader = await aiosqlite.connect(self.path, timeout=self._busy_timeout)
            await self._reader.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            raise store_error(exc) from None

    async def close(self) -> None:
        self._writer.close_soon()  # jobs of this turn go before the stop, later ones fail
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
            raise store_error(exc) from None

    async def heartbeat(self) -> None:
        now = time.time()
        await self._writer.submit(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('heartbeat', ?)", (str(now),)
            ),
            probe=True,
        )

    def space_problem(self) -> str | None:
        """`full` while the last real write failed for want of space (storage.max_size or
        the disk), `disk_low` while the file system has less than storage.min_free left;
        None otherwise. For readiness: a heartbeat that replaces one row still fits."""
        if self._writer.full:
            return "full"
        if self._min_free:
            try:
                info = os.statvfs(self.path.parent)
            except OSError:
                return None
            if info.f_bavail * info.f_frsize < self._min_free:
                return "disk_low"
        return None

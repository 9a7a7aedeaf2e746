"""The PostgreSQL store's connections: a pool for every query and one dedicated connection
that LISTENs for other replicas' commits. Does I/O.

Reconnecting is tenacity's job (exponential backoff with jitter, so replicas that lost the
database together do not reconnect in lockstep): at open, until `connect_timeout`; for the
listener, forever. Queries never retry on their own: a webhook whose commit failed is
answered 503 at once (IDWise retries), and the pool replaces dead connections on the next
use, so the first query after the database is back succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import asyncpg
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_delay,
    stop_never,
    wait_random_exponential,
)

from gateway.errors import StoreError
from gateway.logs import log_fields
from gateway.store.postgres.errors import is_connection_error, store_error
from gateway.store.postgres.schema import migrate
from gateway.store.recent import RecentEvents

log = logging.getLogger("gateway.store")

#: a pooled connection (what `connection()` yields) or a plain one
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

CommitListener = Callable[[Iterable[str] | None], None]

#: NOTIFY channel: the payload is the sender's owner id, then the destinations made due,
#: one per line (none: any destination)
CHANNEL = "idwise_gateway_due"
NOTIFY_LIMIT = 7000  # PostgreSQL caps a payload at 8000 bytes
STATEMENT_TIMEOUT = 30.0
LISTEN_CHECK = 1.0  # how often the listener checks that its connection is still alive


PG_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


def _retryable(exc: BaseException) -> bool:
    return is_connection_error(exc)


class PostgresConnection:
    def __init__(
        self,
        dsn: str,
        pool_min: int = 2,
        pool_max: int = 10,
        connect_timeout: float = 30.0,
        lease_margin: float = 30.0,
    ) -> None:
        self._dsn = dsn
        self._pool_min = pool_min
        self._pool_max = pool_max
        self._connect_timeout = connect_timeout
        self.lease_margin = lease_margin
        self._pool: asyncpg.Pool | None = None
        self._listeners: list[CommitListener] = []
        self.recent = RecentEvents()  # this process's events just accepted, for delivery
        self._listen_task: asyncio.Task[None] | None = None
        #: who holds a claim: readable in `deliveries list` of another replica's operator
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.batches = 0
        self.jobs = 0

    # ---- the Store protocol's plumbing -----------------------------------------------
    shared = True  # several processes share this store: claims carry leases

    def listen(self, listener: CommitListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _made_due(self, destinations: Iterable[str] | None) -> None:
        for listener in list(self._listeners):
            listener(destinations)

    @property
    def writer_stats(self) -> tuple[int, int]:
        return self.batches, self.jobs

    async def open(self) -> None:
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_retryable),
                wait=wait_random_exponential(multiplier=0.2, max=3.0),
                stop=stop_after_delay(self._connect_timeout),
                reraise=True,
            ):
                with attempt:
                    await self._open_once()
        except Exception as exc:
            raise store_error(exc) from None  # the cause may quote the DSN
        self._listen_task = asyncio.create_task(self._listen_forever(), name="store-listen")

    async def _open_once(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=5.0)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=min(self._pool_min, self._pool_max),
            max_size=self._pool_max,
            timeout=5.0,  # connect timeout: an unreachable database fails fast (503)
            command_timeout=STATEMENT_TIMEOUT,
            # a connection back in the pool after a failed statement must not keep a
            # transaction open; asyncpg resets it, this bounds a stuck one
            max_inactive_connection_lifetime=300.0,
        )

    async def close(self) -> None:
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listen_task
            self._listen_task = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 5.0)
            except (TimeoutError, *PG_ERRORS):
                pool.terminate()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection; every failure comes out as a `StoreError`."""
        if self._pool is None:
            raise StoreError("unavailable", "store not open")
        try:
            async with self._pool.acquire(timeout=10.0) as conn:
                try:
                    yield conn
                except asyncpg.exceptions.InternalClientError:
                    # the protocol lost track of the connection's state (seen when the server
                    # shuts down mid-statement): never hand this connection out again
                    conn.terminate()
                    raise
        except StoreError:
            raise
        except (
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.exceptions.InternalClientError,
            OSError,
            TimeoutError,
        ) as exc:
            raise store_error(exc) from None

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows

    async def execute(self, sql: str, *args: Any) -> str:
        async with self.connection() as conn:
            status: str = await conn.execute(sql, *args)
            return status

    async def heartbeat(self) -> None:
        await self.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            "heartbeat",  # one row for every replica: it proves a commit, not who made it
            str(time.time()),
        )

    async def notify(self, conn: Connection, destinations: Iterable[str] | None) -> None:
        """Inside a transaction: other replicas hear it when (and only if) it commits."""
        names = "" if destinations is None else "\n".join(sorted(set(destinations)))
        if len(names.encode()) > NOTIFY_LIMIT:
            names = ""
        # the owner first: a replica skips its own (it woke its engine at commit already)
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{self.owner}\n{names}")

    # ---- wake-ups from other replicas --------------------------------------------------
    async def _listen_forever(self) -> None:
        first = True
        while True:
            conn = await self._connect_listener()
            try:
                await conn.add_listener(CHANNEL, self._heard)
                if not first:
                    # notifications sent while we were away are lost: look at everything
                    log.info("store listener reconnected")
                    self._made_due(None)
                first = False
                while not conn.is_closed():
                    await asyncio.sleep(LISTEN_CHECK)
                    await conn.execute("SELECT 1")  # notices a dead server within a second
            except Exception:  # whatever broke the connection: reconnect, never stop listening
                log_fields(log, logging.WARNING, "store listener lost", {"reason": "unavailable"})
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2.0)

    async def _connect_listener(self) -> asyncpg.Connection:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retryable),
            wait=wait_random_exponential(multiplier=0.1, max=5.0),
            stop=stop_never,
        ):
            with attempt:
                conn: asyncpg.Connection = await asyncpg.connect(self._dsn, timeout=5.0)
                return conn
        raise AssertionError("unreachable: stop_never")

    def _heard(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        owner, _, names = str(payload).partition("\n")
        if owner != self.owner:
            self._made_due(names.split("\n") if names else None)

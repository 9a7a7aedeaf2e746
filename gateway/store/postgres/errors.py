"""asyncpg's exceptions turned into `StoreError` reasons. Pure.

The message never carries the server's text: it may quote the DSN or a value of the event.
"""

from __future__ import annotations

import asyncpg

from gateway.errors import StoreError

#: failures where the database is unreachable or restarting: the caller answers 503 and the
#: pool reconnects on the next use
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.InternalClientError,  # a connection whose protocol state broke
)


def is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, CONNECTION_ERRORS)


def store_error(exc: BaseException) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    if is_connection_error(exc):
        return StoreError("unavailable", "database unreachable")
    if isinstance(exc, asyncpg.DiskFullError):
        return StoreError("full", "database disk is full")
    if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        return StoreError("read_only", "database is read-only")
    if isinstance(exc, asyncpg.QueryCanceledError):
        return StoreError("timeout", "database statement timed out")
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        return StoreError("auth", "database refused the credentials")
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return StoreError("no_database", "database does not exist")
    if isinstance(exc, asyncpg.PostgresError):
        return StoreError("io", f"database error: {type(exc).__name__}")
    return StoreError("io", f"database error: {type(exc).__name__}")

"""The embedded SQLite backend (the default): one file, WAL, `synchronous=FULL`, group commit.

`SqliteStore` is assembled from one class per job: the outbox (ingest, due deliveries,
outcomes, expiry, replay), the read queries and retention, over one pair of connections.
"""

from __future__ import annotations

from gateway.store.derived import DerivedCalls
from gateway.store.sqlite.outbox import SqliteOutbox
from gateway.store.sqlite.queries import SqliteQueries
from gateway.store.sqlite.retention import SqliteRetention
from gateway.store.sqlite.schema import MIGRATIONS, migrate


class SqliteStore(SqliteOutbox, SqliteQueries, SqliteRetention, DerivedCalls):
    """The `Store` interface on SQLite."""


__all__ = ["MIGRATIONS", "SqliteStore", "migrate"]

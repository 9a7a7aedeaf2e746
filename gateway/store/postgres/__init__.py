"""The PostgreSQL backend, for several replicas on one database: dedupe by a unique key,
claims with a lease and a fencing token, wake-ups by LISTEN/NOTIFY, cluster-wide rate
slots, group commit for ingest.

`PostgresStore` is assembled from one class per job over one pool: the outbox (ingest,
claims, outcomes, expiry, replay), the read queries and retention.
"""

from __future__ import annotations

from gateway.store.derived import DerivedCalls
from gateway.store.postgres.outbox import PostgresOutbox
from gateway.store.postgres.queries import PostgresQueries
from gateway.store.postgres.retention import PostgresRetention
from gateway.store.postgres.schema import MIGRATIONS, migrate


class PostgresStore(PostgresOutbox, PostgresQueries, PostgresRetention, DerivedCalls):
    """The `Store` interface on PostgreSQL."""


__all__ = ["MIGRATIONS", "PostgresStore", "migrate"]

"""Retention on PostgreSQL: old events whose deliveries are all finished, pruned in small
batches. Any replica may run it; `SKIP LOCKED` lets two passes at once split the work
instead of waiting for each other. Does I/O."""

from __future__ import annotations

from gateway.store.postgres.connection import PostgresConnection


class PostgresRetention(PostgresConnection):
    async def prune(self, cutoff: float, batch: int = 500) -> int:
        """Delete up to `batch` events older than cutoff whose deliveries are all finished."""
        async with self.connection() as conn, conn.transaction():
            ids = [
                r["id"]
                for r in await conn.fetch(
                    "SELECT id FROM events e WHERE received_at < $1 AND NOT EXISTS"
                    " (SELECT 1 FROM deliveries d WHERE d.event_row = e.id"
                    " AND d.status = 'pending') ORDER BY received_at LIMIT $2"
                    " FOR UPDATE SKIP LOCKED",
                    cutoff,
                    batch,
                )
            ]
            if not ids:
                return 0
            # a replay may have made one of their deliveries pending since: lock them and
            # keep only the events that still have none (a replay of an old event wins)
            # (every one of their deliveries locked, whatever its status: FOR UPDATE waits for
            # a replay in progress and then returns the row as that replay left it)
            locked = await conn.fetch(
                "SELECT event_row, status FROM deliveries WHERE event_row = ANY($1::bigint[])"
                " FOR UPDATE",
                ids,
            )
            ids = sorted(set(ids) - {r["event_row"] for r in locked if r["status"] == "pending"})
            if not ids:
                return 0
            await conn.execute(
                "DELETE FROM attempts WHERE delivery_id IN"
                " (SELECT id FROM deliveries WHERE event_row = ANY($1::bigint[]))",
                ids,
            )
            await conn.execute("DELETE FROM deliveries WHERE event_row = ANY($1::bigint[])", ids)
            await conn.execute("DELETE FROM events WHERE id = ANY($1::bigint[])", ids)
            return len(ids)

"""Retention on SQLite: old events whose deliveries are all finished are pruned in small
batches, so ingest commits in between. Does I/O."""

from __future__ import annotations

import sqlite3

from gateway.store.sqlite.connection import SqliteConnection


class SqliteRetention(SqliteConnection):
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
            conn.execute(f"DELETE FROM duplicates WHERE event_row IN ({marks})", ids)
            conn.execute(f"DELETE FROM events WHERE id IN ({marks})", ids)
            return len(ids)

        return await self.write(run)

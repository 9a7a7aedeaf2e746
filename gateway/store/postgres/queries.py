"""Read queries over the PostgreSQL store, for the CLI and the metrics endpoint; the same
answers (keys and value types) as the SQLite backend's. Does I/O."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gateway.store.postgres.connection import PostgresConnection


class PostgresQueries(PostgresConnection):
    async def pending_stats(self) -> list[dict[str, Any]]:
        rows = await self.fetch(
            "SELECT destination, count(*) AS pending, min(queued_at) AS oldest FROM deliveries"
            " WHERE status = 'pending' GROUP BY destination"
        )
        return [dict(r) for r in rows]

    async def list_events(
        self,
        *,
        event_type: str | None = None,
        since: float | None = None,
        journey: str | None = None,
        status: str | None = None,
        destination: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Newest first. `status` / `destination`: events with such a delivery."""
        where, params = _filters(
            ("e.event_type = $?", event_type),
            ("e.received_at >= $?", since),
            ("e.journey_key = $?", journey),
            (
                "EXISTS (SELECT 1 FROM deliveries s WHERE s.event_row = e.id AND s.status = $?)",
                status,
            ),
            (
                "EXISTS (SELECT 1 FROM deliveries s WHERE s.event_row = e.id"
                " AND s.destination = $?)",
                destination,
            ),
        )
        rows = await self.fetch(
            "SELECT e.id, e.dedupe_key, e.event_type, e.journey_key, e.reference_no, e.received_at,"
            " e.source_ip, e.rules,"
            " (SELECT count(*) FROM deliveries d WHERE d.event_row = e.id) AS deliveries,"
            " (SELECT count(*) FROM deliveries d WHERE d.event_row = e.id"
            " AND d.status = 'pending') AS pending"
            f" FROM events e WHERE {where} ORDER BY e.id DESC LIMIT ${len(params) + 1}",
            *params,
            limit,
        )
        return [{**dict(r), "rules": json.loads(r["rules"])} for r in rows]

    async def get_event(self, key: str) -> dict[str, Any] | None:
        rows = await self.fetch(
            "SELECT * FROM events WHERE dedupe_key = $1 OR event_id = $1 OR id::text = $1"
            " ORDER BY id DESC LIMIT 1",
            key,
        )
        if not rows:
            return None
        row = dict(rows[0])
        row["headers"] = json.loads(row["headers"])
        row["rules"] = json.loads(row["rules"])
        raw = row.pop("raw")
        try:
            row["payload"] = json.loads(raw)
        except ValueError:
            row["payload"] = raw.decode("utf-8", "replace")
        row["deliveries"] = await self.list_deliveries(event_row=row["id"], limit=1000)
        return row

    async def list_deliveries(
        self,
        *,
        status: str | None = None,
        destination: str | None = None,
        event_type: str | None = None,
        event_row: int | None = None,
        journey: str | None = None,
        since: float | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        where, params = _filters(
            ("d.status = $?", status),
            ("d.destination = $?", destination),
            ("e.event_type = $?", event_type),
            ("d.event_row = $?", event_row),
            ("d.journey_key = $?", journey),
            ("d.queued_at >= $?", since),
        )
        rows = await self.fetch(
            "SELECT d.id, d.event_row, e.dedupe_key, e.event_type, d.destination, d.rule,"
            " d.journey_key, d.status, d.attempts, d.queued_at, d.first_queued_at,"
            " d.next_attempt_at, d.updated_at,"
            " d.reason, d.last_error"
            f" FROM deliveries d JOIN events e ON e.id = d.event_row WHERE {where}"
            f" ORDER BY d.id DESC LIMIT ${len(params) + 1}",
            *params,
            limit,
        )
        return [dict(r) for r in rows]

    async def get_delivery(self, delivery_id: int) -> dict[str, Any] | None:
        rows = await self.fetch(
            "SELECT d.*, e.dedupe_key, e.event_type FROM deliveries d"
            " JOIN events e ON e.id = d.event_row WHERE d.id = $1",
            delivery_id,
        )
        if not rows:
            return None
        row = dict(rows[0])
        attempts = await self.fetch(
            "SELECT number, started_at, duration, outcome, reason, status_code, detail, output"
            " FROM attempts WHERE delivery_id = $1 ORDER BY number, id",
            delivery_id,
        )
        row["attempt_history"] = [dict(a) for a in attempts]
        return row

    async def events_for_reroute(
        self, *, event: str | None = None, since: float | None = None, event_type: str | None = None
    ) -> list[tuple[int, bytes]]:
        where, params = _filters(
            ("(dedupe_key = $? OR event_id = $? OR id::text = $?)", event),
            ("received_at >= $?", since),
            ("event_type = $?", event_type),
        )
        rows = await self.fetch(f"SELECT id, raw FROM events WHERE {where} ORDER BY id", *params)
        return [(r["id"], bytes(r["raw"])) for r in rows]

    async def existing_routes(self, event_rows: Sequence[int]) -> set[tuple[int, str]]:
        rows = await self.fetch(
            "SELECT event_row, destination FROM deliveries WHERE event_row = ANY($1::bigint[])",
            list(event_rows),
        )
        return {(r["event_row"], r["destination"]) for r in rows}


def _filters(*pairs: tuple[str, Any]) -> tuple[str, list[Any]]:
    """`$?` in a clause is this value's placeholder (every `$?` of a clause names it)."""
    clauses: list[str] = ["true"]
    params: list[Any] = []
    for clause, value in pairs:
        if value is None:
            continue
        params.append(value)
        clauses.append(clause.replace("$?", f"${len(params)}"))
    return " AND ".join(clauses), params

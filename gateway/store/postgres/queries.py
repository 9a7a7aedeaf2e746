"""Read queries over the PostgreSQL store, for the CLI and the metrics endpoint; the same
answers (keys and value types) as the SQLite backend's. Does I/O."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gateway.store.event_sql import OUTCOME_CLAUSES, SUMMARY_COLUMNS, event_page
from gateway.store.postgres.connection import PostgresConnection
from gateway.store.records import EventFilter, EventPage


class PostgresQueries(PostgresConnection):
    async def pending_stats(self) -> list[dict[str, Any]]:
        rows = await self.fetch(
            "SELECT destination, count(*) AS pending, min(queued_at) AS oldest FROM deliveries"
            " WHERE status = 'pending' GROUP BY destination"
        )
        return [dict(r) for r in rows]

    async def page_events(
        self,
        query: EventFilter,
        *,
        before: int | None = None,
        limit: int = 50,
        window: int | None = None,
    ) -> EventPage:
        """Keyset pages by id, newest first, as on SQLite (see its docstring): time bounds
        become id bounds, `window` bounds the ids examined for filters without an index."""
        upper = before
        lower: int | None = None
        if query.until is not None:
            found = await self.fetch(
                "SELECT id FROM events WHERE received_at <= $1 ORDER BY received_at DESC LIMIT 1",
                query.until,
            )
            if not found:
                return EventPage([], None)
            upper = min(upper, found[0]["id"] + 1) if upper is not None else found[0]["id"] + 1
        if query.since is not None:
            found = await self.fetch(
                "SELECT id FROM events WHERE received_at >= $1 ORDER BY received_at LIMIT 1",
                query.since,
            )
            if not found:
                return EventPage([], None)
            lower = found[0]["id"]
        windowed = False
        if window is not None and query.unindexed:
            top = upper
            if top is None:
                found = await self.fetch("SELECT max(id) AS top FROM events")
                top = (found[0]["top"] or 0) + 1
            if lower is None or top - window > lower:
                lower, windowed = max(top - window, 0), True
        outcome = query.outcome
        where, params = _filters(
            ("e.id < $?", upper),
            ("e.id >= $?", lower),
            ("e.event_type = $?", query.event_type),
            ("e.journey_key = $?", query.journey),
            ("e.reference_no = $?", query.reference),
            ("e.received_at >= $?", query.since),
            ("e.received_at <= $?", query.until),
            (OUTCOME_CLAUSES.get(outcome or "", ""), True if outcome in OUTCOME_CLAUSES else None),
            (
                "EXISTS (SELECT 1 FROM deliveries s WHERE s.event_row = e.id"
                " AND s.destination = $?)",
                query.destination,
            ),
            (
                "strpos(lower(convert_from(e.raw, 'UTF8')), $?) > 0",
                query.text.lower() if query.text else None,
            ),
        )
        rows = await self.fetch(
            f"SELECT {SUMMARY_COLUMNS} FROM events e WHERE {where}"
            f" ORDER BY e.id DESC LIMIT ${len(params) + 1}",
            *params,
            limit + 1,
        )
        return event_page(rows, limit, lower if windowed else None)

    async def get_event(self, key: str, *, with_raw: bool = False) -> dict[str, Any] | None:
        """The event with its deliveries; `with_raw` keeps the bytes as received."""
        # one indexed lookup per way of naming an event (an OR of them scans the table)
        row_id = int(key) if key.isascii() and key.isdigit() and len(key) < 19 else None
        rows = await self.fetch(
            "SELECT * FROM events WHERE id = ANY(ARRAY(SELECT id FROM events WHERE dedupe_key = $1"
            " UNION ALL SELECT id FROM events WHERE id = $2"
            " UNION ALL SELECT id FROM events WHERE event_id = $1)) ORDER BY id DESC LIMIT 1",
            key,
            row_id,
        )
        if not rows:
            return None
        row = dict(rows[0])
        row["headers"] = json.loads(row["headers"])
        row["rules"] = json.loads(row["rules"])
        raw = bytes(row["raw"]) if with_raw else bytes(row.pop("raw"))
        if with_raw:
            row["raw"] = raw
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
        before: int | None = None,
    ) -> list[dict[str, Any]]:
        where, params = _filters(
            ("d.id < $?", before),
            _status(status, "d."),
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

    async def count_deliveries(
        self,
        *,
        status: str | None = None,
        destination: str | None = None,
        since: float | None = None,
    ) -> int:
        where, params = _filters(
            _status(status), ("destination = $?", destination), ("queued_at >= $?", since)
        )
        rows = await self.fetch(f"SELECT count(*) AS n FROM deliveries WHERE {where}", *params)
        return int(rows[0]["n"])

    async def delivery_stats(self) -> list[dict[str, Any]]:
        """As on SQLite: only the partial indexes of pending and dead deliveries are read."""
        rows = await self.fetch(
            "SELECT destination, count(*) AS pending, min(queued_at) AS oldest,"
            " count(*) FILTER (WHERE attempts > attempt_base) AS retrying,"
            " min(queued_at) FILTER (WHERE attempts > attempt_base) AS retrying_since"
            " FROM deliveries WHERE status = 'pending' GROUP BY destination"
        )
        stats: dict[str, dict[str, Any]] = {
            r["destination"]: {**dict(r), "dead": 0, "last_error": None} for r in rows
        }
        for r in await self.fetch(
            "SELECT destination, count(*) AS dead FROM deliveries WHERE status = 'dead'"
            " GROUP BY destination"
        ):
            entry = stats.setdefault(
                r["destination"],
                {"destination": r["destination"], "pending": 0, "oldest": None, "retrying": 0,
                 "retrying_since": None, "last_error": None},
            )  # fmt: skip
            entry["dead"] = r["dead"]
        for status in ("pending", "dead"):
            for r in await self.fetch(
                "SELECT DISTINCT ON (destination) destination, updated_at AS at, reason,"
                f" last_error FROM deliveries WHERE status = '{status}' AND reason IS NOT NULL"
                " ORDER BY destination, updated_at DESC"
            ):
                entry = stats[r["destination"]]
                previous = entry["last_error"]
                if previous is None or r["at"] > previous["at"]:
                    entry["last_error"] = {
                        "at": r["at"], "reason": r["reason"], "detail": r["last_error"],
                        "status": status,
                    }  # fmt: skip
        for entry in stats.values():
            entry["pending"], entry["retrying"] = int(entry["pending"]), int(entry["retrying"])
        return list(stats.values())

    async def webhook_counts(self, since: float) -> dict[str, int]:
        rows = await self.fetch(
            "SELECT (SELECT count(*) FROM events WHERE received_at >= $1) AS accepted,"
            " (SELECT count(*) FROM duplicates WHERE received_at >= $1) AS duplicate",
            since,
        )
        return {"accepted": int(rows[0]["accepted"]), "duplicate": int(rows[0]["duplicate"])}

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
        if "$?" in clause:  # a clause without one (a literal status) takes no parameter
            params.append(value)
        clauses.append(clause.replace("$?", f"${len(params)}"))
    return " AND ".join(clauses), params


#: statuses with a partial index (pending, dead) are literals in the SQL, so the planner can
#: use those indexes (a generic plan for a parameter cannot)
STATUSES = ("pending", "delivered", "dead")


def _status(status: str | None, prefix: str = "") -> tuple[str, Any]:
    if status in STATUSES:
        return f"{prefix}status = '{status}'", True
    return f"{prefix}status = $?", status

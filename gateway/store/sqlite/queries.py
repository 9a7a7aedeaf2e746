"""Read queries over the SQLite store, shared by the CLI (and the metrics endpoint). Does
I/O (through the read-only connection)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gateway.store.event_sql import OUTCOME_CLAUSES, SUMMARY_COLUMNS, event_page
from gateway.store.records import EventFilter, EventPage
from gateway.store.sqlite.connection import SqliteConnection


class SqliteQueries(SqliteConnection):
    async def pending_stats(self) -> list[dict[str, Any]]:
        rows = await self.read(
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
        """One page, newest first, of events with ids below `before` (keyset pagination on
        the primary key: as fast on page 1,000 as on page 1).

        Time bounds become id bounds first (one index probe each), so the scan stays on the
        primary key. `window` caps how many ids below the cursor are examined when a filter
        has no index (type, delivered or unrouted, destination, text): the page says how far it
        searched and the next page continues below that.
        """
        upper = before
        lower: int | None = None
        if query.until is not None:
            rows = await self.read(
                "SELECT id FROM events WHERE received_at <= ? ORDER BY received_at DESC LIMIT 1",
                (query.until,),
            )
            if not rows:
                return EventPage([], None)
            upper = min(upper, rows[0][0] + 1) if upper is not None else rows[0][0] + 1
        if query.since is not None:
            rows = await self.read(
                "SELECT id FROM events WHERE received_at >= ? ORDER BY received_at LIMIT 1",
                (query.since,),
            )
            if not rows:
                return EventPage([], None)
            lower = rows[0][0]
        windowed = False
        if window is not None and query.unindexed:
            top = upper
            if top is None:
                rows = await self.read("SELECT max(id) FROM events")
                top = (rows[0][0] or 0) + 1
            if lower is None or top - window > lower:
                lower, windowed = max(top - window, 0), True
        text = query.text.lower() if query.text else None
        outcome = query.outcome
        where, params = _filters(
            ("e.id < ?", upper),
            ("e.id >= ?", lower),
            ("e.event_type = ?", query.event_type),
            ("e.journey_key = ?", query.journey),
            ("e.reference_no = ?", query.reference),
            # unary +: the time bounds are already id bounds; keep the planner on the key
            ("+e.received_at >= ?", query.since),
            ("+e.received_at <= ?", query.until),
            (OUTCOME_CLAUSES.get(outcome or "", ""), () if outcome in OUTCOME_CLAUSES else None),
            (
                "EXISTS (SELECT 1 FROM deliveries s WHERE s.event_row = e.id"
                " AND s.destination = ?)",
                query.destination,
            ),
            ("instr(lower(CAST(e.raw AS TEXT)), ?) > 0", text),
        )
        rows = await self.read(
            f"SELECT {SUMMARY_COLUMNS} FROM events e WHERE {where} ORDER BY e.id DESC LIMIT ?",
            (*params, limit + 1),
        )
        return event_page(rows, limit, lower if windowed else None)

    async def get_event(self, key: str, *, with_raw: bool = False) -> dict[str, Any] | None:
        """The event with its deliveries; `with_raw` keeps the bytes as received (the
        console explains them exactly as the webhook path saw them)."""
        # indexed lookups first (dedupe key, row id): the console opens events by id at
        # millions of rows; the unindexed event_id column is the last resort
        rows = await self.read(
            "SELECT * FROM events WHERE dedupe_key = ? UNION ALL"
            " SELECT * FROM events WHERE id = ? ORDER BY id DESC LIMIT 1",
            (key, int(key) if key.isascii() and key.isdigit() else None),
        )
        if not rows:
            rows = await self.read(
                "SELECT * FROM events WHERE event_id = ? ORDER BY id DESC LIMIT 1", (key,)
            )
        if not rows:
            return None
        row = dict(rows[0])
        row["headers"] = json.loads(row["headers"])
        row["rules"] = json.loads(row["rules"])
        raw = row["raw"] if with_raw else row.pop("raw")
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
            ("d.id < ?", before),
            _status(status, "d."),
            ("d.destination = ?", destination),
            ("e.event_type = ?", event_type),
            ("d.event_row = ?", event_row),
            ("d.journey_key = ?", journey),
            ("d.queued_at >= ?", since),
        )
        rows = await self.read(
            "SELECT d.id, d.event_row, e.dedupe_key, e.event_type, d.destination, d.rule, d.journey_key,"
            " d.status, d.attempts, d.queued_at, d.first_queued_at, d.next_attempt_at, d.updated_at,"
            " d.reason, d.last_error"
            f" FROM deliveries d{_status_index(status, event_row, journey)}"
            f" JOIN events e ON e.id = d.event_row WHERE {where}"
            " ORDER BY d.id DESC LIMIT ?",
            (*params, limit),
        )
        return [dict(r) for r in rows]

    async def count_deliveries(
        self,
        *,
        status: str | None = None,
        destination: str | None = None,
        since: float | None = None,
    ) -> int:
        """How many deliveries a filtered action (replay all dead of a destination) touches."""
        where, params = _filters(
            _status(status), ("destination = ?", destination), ("queued_at >= ?", since)
        )
        rows = await self.read(f"SELECT count(*) FROM deliveries WHERE {where}", params)
        return int(rows[0][0])

    async def delivery_stats(self) -> list[dict[str, Any]]:
        """Per destination: pending, oldest pending, retrying (pending after a failed
        attempt), dead, and the latest error. Only the partial indexes of pending and dead
        deliveries are read, so this stays cheap beside millions of delivered ones."""
        rows = await self.read(
            "SELECT destination, count(*) AS pending, min(queued_at) AS oldest,"
            " sum(attempts > attempt_base) AS retrying, min(CASE WHEN attempts > attempt_base"
            " THEN queued_at END) AS retrying_since"
            " FROM deliveries WHERE status = 'pending' GROUP BY destination"
        )
        stats: dict[str, dict[str, Any]] = {
            r["destination"]: {**dict(r), "dead": 0, "last_error": None} for r in rows
        }
        for r in await self.read(
            "SELECT destination, count(*) FROM deliveries WHERE status = 'dead' GROUP BY destination"
        ):
            entry = stats.setdefault(
                r[0], {"destination": r[0], "pending": 0, "oldest": None, "retrying": 0,
                       "retrying_since": None, "last_error": None},
            )  # fmt: skip
            entry["dead"] = r[1]
        # the latest error of each destination among its pending and dead deliveries; max()
        # makes SQLite return the other columns of that row
        for status in ("pending", "dead"):
            for r in await self.read(
                "SELECT destination, max(updated_at) AS at, reason, last_error FROM deliveries"
                f" WHERE status = '{status}' AND reason IS NOT NULL GROUP BY destination"
            ):
                entry = stats[r["destination"]]
                previous = entry["last_error"]
                if previous is None or r["at"] > previous["at"]:
                    entry["last_error"] = {
                        "at": r["at"], "reason": r["reason"], "detail": r["last_error"],
                        "status": status,
                    }  # fmt: skip
        return list(stats.values())

    async def webhook_counts(self, since: float) -> dict[str, int]:
        """Webhooks stored since `since`: accepted (new events) and duplicate."""
        accepted = await self.read("SELECT count(*) FROM events WHERE received_at >= ?", (since,))
        duplicate = await self.read(
            "SELECT count(*) FROM duplicates WHERE received_at >= ?", (since,)
        )
        return {"accepted": int(accepted[0][0]), "duplicate": int(duplicate[0][0])}

    async def get_delivery(self, delivery_id: int) -> dict[str, Any] | None:
        rows = await self.read(
            "SELECT d.*, e.dedupe_key, e.event_type FROM deliveries d JOIN events e ON e.id = d.event_row"
            " WHERE d.id = ?",
            (delivery_id,),
        )
        if not rows:
            return None
        row = dict(rows[0])
        attempts = await self.read(
            "SELECT number, started_at, duration, outcome, reason, status_code, detail, output"
            " FROM attempts WHERE delivery_id = ? ORDER BY number, id",
            (delivery_id,),
        )
        row["attempt_history"] = [dict(a) for a in attempts]
        return row

    async def events_for_reroute(
        self, *, event: str | None = None, since: float | None = None, event_type: str | None = None
    ) -> list[tuple[int, bytes]]:
        where, params = _filters(
            (
                "(dedupe_key = ? OR event_id = ? OR CAST(id AS TEXT) = ?)",
                (event, event, event) if event else None,
            ),
            ("received_at >= ?", since),
            ("event_type = ?", event_type),
        )
        rows = await self.read(f"SELECT id, raw FROM events WHERE {where} ORDER BY id", params)
        return [(r["id"], r["raw"]) for r in rows]

    async def existing_routes(self, event_rows: Sequence[int]) -> set[tuple[int, str]]:
        found: set[tuple[int, str]] = set()
        for start in range(0, len(event_rows), 500):
            chunk = event_rows[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = await self.read(
                f"SELECT event_row, destination FROM deliveries WHERE event_row IN ({marks})", chunk
            )
            found.update((r[0], r[1]) for r in rows)
        return found


#: statuses with a partial index (pending, dead) must be literals in the SQL: the planner
#: cannot prove a partial index's WHERE from a bound parameter
STATUSES = ("pending", "delivered", "dead")
_STATUS_INDEX = {"pending": "deliveries_due", "dead": "deliveries_dead"}


def _status(status: str | None, prefix: str = "") -> tuple[str, Any]:
    if status in STATUSES:
        return f"{prefix}status = '{status}'", ()
    return f"{prefix}status = ?", status


def _status_index(status: str | None, event_row: int | None, journey: str | None) -> str:
    """Newest pending or dead deliveries come from their (small) partial index, never from
    a walk down millions of delivered ones; one event's or journey's have better indexes."""
    if status in _STATUS_INDEX and event_row is None and journey is None:
        return f" INDEXED BY {_STATUS_INDEX[status]}"
    return ""


def _filters(*pairs: tuple[str, Any]) -> tuple[str, list[Any]]:
    clauses: list[str] = ["1=1"]
    params: list[Any] = []
    for clause, value in pairs:
        if value is None:
            continue
        clauses.append(clause)
        if isinstance(value, tuple):
            params.extend(value)
        else:
            params.append(value)
    return " AND ".join(clauses), params

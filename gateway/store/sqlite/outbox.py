"""The outbox on SQLite: an event and its deliveries in one commit, due deliveries, attempt
outcomes, expiry and replay. Does I/O (through the connection's writer and reader)."""

from __future__ import annotations

import json
import sqlite3
import time
from _json import encode_basestring_ascii, make_encoder
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from gateway.events import Event
from gateway.store.records import Accepted, AttemptRecord, DueDelivery, Requeued
from gateway.store.sqlite.connection import SqliteConnection
from gateway.store.sqlite.writer import Batched


class _Accept(NamedTuple):
    """One accept as data, built on the request's side (it overlaps the writer's fsync):
    the events row without its id, and the (destination, rule) pairs to queue. A NamedTuple:
    one per request, a third of a frozen dataclass's cost to build."""

    row: tuple[Any, ...]  # the columns of _INSERT_EVENT after id (dedupe_key first)
    journey_key: str | None
    received_at: float
    routes: Sequence[tuple[str, str | None]]


_INSERT_EVENT = (
    "INSERT INTO events (id, dedupe_key, event_type, event_id, journey_key, reference_no,"
    " received_at, source_ip, headers, rules, raw) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_DELIVERY = (
    "INSERT INTO deliveries (id, event_row, destination, rule, journey_key, queued_at,"
    " next_attempt_at, updated_at) VALUES (?,?,?,?,?,?,?,?)"
)


def _unencodable(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


#: `json.dumps(headers)` byte for byte through one C encoder made once (json.dumps builds a
#: new one per call: 3.6 -> 1.0 us for a webhook's kept headers)
_HEADERS_ENCODER = make_encoder(
    None, _unencodable, encode_basestring_ascii, None, ": ", ", ", False, False, True
)


def _headers_json(headers: dict[str, str]) -> str:
    return "".join(_HEADERS_ENCODER(headers, 0))


#: the JSON of the last few rule lists: a config has few distinct ones, each request one
_RULES_JSON: dict[tuple[str, ...], str] = {}


def _rules_json(rules: Sequence[str]) -> str:
    key = tuple(rules)
    text = _RULES_JSON.get(key)
    if text is None:
        if len(_RULES_JSON) >= 1024:
            _RULES_JSON.clear()
        text = _RULES_JSON[key] = json.dumps(list(key))
    return text


def _insert_events(conn: sqlite3.Connection, items: list[_Accept]) -> list[Accepted]:
    """The accepts of one group commit in a few statements: one SELECT finds the eventIds
    already stored, one executemany inserts the new events, one their deliveries. Row ids
    are given explicitly (max + 1, what SQLite would pick: the writer holds the write lock).
    A repeated eventId, stored before or earlier in the same batch, answers duplicate with
    the first one's row."""
    if len(items) == 1:
        found = conn.execute(
            "SELECT dedupe_key, id FROM events WHERE dedupe_key = ?", (items[0].row[0],)
        ).fetchall()
    else:
        found = conn.execute(
            "SELECT dedupe_key, id FROM events"
            " WHERE dedupe_key IN (SELECT value FROM json_each(?))",
            (json.dumps([item.row[0] for item in items]),),
        ).fetchall()
    known: dict[str, int] = dict(found)
    if len(known) == len(items):  # all duplicates (a sender retrying): nothing to insert
        _insert_duplicates(conn, [(known[item.row[0]], item) for item in items])
        return [Accepted("duplicate", known[item.row[0]]) for item in items]
    last_event, last_delivery = conn.execute(
        "SELECT (SELECT coalesce(max(id), 0) FROM events),"
        " (SELECT coalesce(max(id), 0) FROM deliveries)"
    ).fetchone()
    events: list[tuple[Any, ...]] = []
    deliveries: list[tuple[Any, ...]] = []
    results: list[Accepted] = []
    repeated: list[tuple[int, _Accept]] = []
    for item in items:
        key = item.row[0]
        row = known.get(key)
        if row is not None:
            results.append(Accepted("duplicate", row))
            repeated.append((row, item))
            continue
        last_event += 1
        known[key] = last_event
        events.append((last_event, *item.row))
        at = item.received_at
        first = last_delivery + 1
        for destination, rule in item.routes:
            last_delivery += 1
            deliveries.append(
                (last_delivery, last_event, destination, rule, item.journey_key, at, at, at)
            )
        results.append(Accepted("accepted", last_event, tuple(range(first, last_delivery + 1))))
    conn.executemany(_INSERT_EVENT, events)
    if deliveries:
        conn.executemany(_INSERT_DELIVERY, deliveries)
    if repeated:
        _insert_duplicates(conn, repeated)
    return results


def _insert_duplicates(conn: sqlite3.Connection, repeated: list[tuple[int, _Accept]]) -> None:
    """One row per repeated webhook (rare), so every replica counts duplicates the same."""
    conn.executemany(
        "INSERT INTO duplicates (event_row, received_at, source_ip) VALUES (?,?,?)",
        # row[6] is source_ip in _INSERT_EVENT's columns after id
        [(row, item.received_at, item.row[6]) for row, item in repeated],
    )


#: a delivery's status after an attempt with this outcome ("retry": still pending)
_STATUS_AFTER = {"delivered": "delivered", "dead": "dead"}


def _record_attempts(
    conn: sqlite3.Connection, records: Sequence[AttemptRecord], now: float
) -> set[int]:
    conn.executemany(
        "INSERT INTO attempts (delivery_id, number, started_at, duration, outcome, reason,"
        " status_code, detail, output) VALUES (?,?,?,?,?,?,?,?,?)",
        [
            (
                r.delivery_id,
                r.number,
                r.started_at,
                r.duration,
                r.outcome,
                r.reason,
                r.status_code,
                r.detail,
                r.output,
            )
            for r in records
        ],
    )
    refused = set()
    for r in records:
        status = _STATUS_AFTER.get(r.outcome, "pending")
        # `status = 'pending'` guards against a replay or expiry that happened meanwhile
        # an uncounted attempt (a shortage of our own) moves the budget's base with it
        cursor = conn.execute(
            "UPDATE deliveries SET status = ?, attempts = max(attempts, ?), updated_at = ?,"
            " next_attempt_at = coalesce(?, next_attempt_at), reason = ?, last_error = ?,"
            " attempt_base = attempt_base + ?"
            " WHERE id = ? AND status = 'pending'",
            (
                status,
                r.number,
                now,
                r.next_attempt_at,
                r.reason,
                r.detail,
                0 if r.counted else 1,
                r.delivery_id,
            ),
        )
        if cursor.rowcount == 0:
            refused.add(r.delivery_id)
    return refused


class SqliteOutbox(SqliteConnection):
    # ---- ingest ------------------------------------------------------------------------
    async def accept(
        self,
        event: Event,
        routes: Sequence[tuple[str, str | None]],
        rules: Sequence[str],
        source_ip: str | None,
        headers: dict[str, str],
        received_at: float | None = None,
    ) -> Accepted:
        at = time.time() if received_at is None else received_at
        row = (
            event.dedupe_key,
            event.type,
            event.event_id,
            event.journey_key,
            event.reference_no,
            at,
            source_ip,
            _headers_json(headers),
            _rules_json(rules),
            event.raw,
        )
        accepted = await self.write(
            Batched(_insert_events, _Accept(row, event.journey_key, at, routes))
        )
        if accepted.delivery_ids:
            self.recent.add(accepted.event_row, event, len(accepted.delivery_ids))
            self._made_due(destination for destination, _ in routes)
        return accepted

    async def import_events(
        self, events: Iterable[Event], received_at: float, destination: str | None = None
    ) -> int:
        """Bulk-load history (benchmarks, migrations from another tool): events, each with one
        already-delivered delivery when `destination` is given. Duplicates are skipped."""
        batch = list(events)

        def run(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO events (dedupe_key, event_type, event_id, journey_key,"
                " reference_no, received_at, raw) VALUES (?,?,?,?,?,?,?)",
                [
                    (
                        e.dedupe_key,
                        e.type,
                        e.event_id,
                        e.journey_key,
                        e.reference_no,
                        received_at,
                        e.raw,
                    )
                    for e in batch
                ],
            )
            inserted = conn.total_changes - before
            if destination is not None:
                conn.executemany(
                    "INSERT OR IGNORE INTO deliveries (event_row, destination, journey_key, status,"
                    " attempts, queued_at, next_attempt_at, updated_at)"
                    " SELECT id, ?, journey_key, 'delivered', 1, ?, ?, ? FROM events WHERE dedupe_key = ?",
                    [
                        (destination, received_at, received_at, received_at, e.dedupe_key)
                        for e in batch
                    ],
                )
            return inserted

        return await self.write(run)

    # ---- delivery ----------------------------------------------------------------------
    async def due(
        self,
        destination: str,
        now: float,
        limit: int,
        ordered: bool,
        exclude: Iterable[int] = (),
        *,
        attempt_timeout: float = 0.0,
    ) -> list[DueDelivery]:
        """Pending deliveries due by `now`, oldest first; with `ordered`, only the first
        pending one of each journey. `exclude`: ids already in flight (not fetched again).
        No claim is taken (`attempt_timeout` is ignored): one process, one engine, which never hands
        out a delivery it has in flight."""
        skip = json.dumps(sorted(exclude))
        order_clause = (
            " AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.status = 'pending'"
            " AND p.destination = d.destination AND p.journey_key = d.journey_key AND p.id < d.id)"
            if ordered
            else ""
        )
        rows = await self.read(
            "SELECT d.id, d.event_row, d.destination, d.attempts, d.queued_at, d.rule, e.raw,"
            " d.attempt_base"
            " FROM deliveries d JOIN events e ON e.id = d.event_row"
            " WHERE d.status = 'pending' AND d.destination = ? AND d.next_attempt_at <= ?"
            " AND d.id NOT IN (SELECT value FROM json_each(?))"
            + order_clause
            + " ORDER BY d.next_attempt_at, d.id LIMIT ?",
            (destination, now, skip, limit),
        )
        recent = self.recent.take
        return [
            DueDelivery(
                r["id"],
                r["event_row"],
                r["destination"],
                r["attempts"],
                r["queued_at"],
                r["raw"],
                r["rule"],
                r["attempt_base"],
                0,
                recent(r["event_row"], r["raw"]),
            )
            for r in rows
        ]

    async def record(self, records: Sequence[AttemptRecord]) -> set[int]:
        now = time.time()
        return await self.write(lambda conn: _record_attempts(conn, records, now))

    # one process: claims are always its own, so these are trivially true
    async def extend_leases(
        self, claims: Sequence[tuple[int, int]], attempt_timeout: float
    ) -> set[int]:
        return set()

    async def release(self, claims: Sequence[tuple[int, int]]) -> None:
        return None

    async def reserve_rate_slot(
        self, destination: str, interval: float, restart: bool = False
    ) -> float:
        """The same spacing as the cluster's, kept in memory: one process sends alone."""
        now = time.monotonic()
        start = now if restart else max(now, self._rate_slots.get(destination, 0.0))
        self._rate_slots[destination] = start + interval
        return start - now

    async def expire(
        self,
        max_age: dict[str, float],
        default_max_age: float,
        now: float,
        in_flight: set[int] | None = None,
    ) -> dict[str, int]:
        """Pending deliveries past their destination's max_age become dead (reason max_age);
        those with an attempt in flight are left to that attempt. Counts per destination."""
        skip = sorted(in_flight or ())
        skip_clause = f" AND id NOT IN ({','.join('?' * len(skip))})" if skip else ""

        def run(conn: sqlite3.Connection) -> dict[str, int]:
            expired: dict[str, int] = {}
            stale = [(destination, now - age) for destination, age in max_age.items()]
            for destination, cutoff in stale:
                count = conn.execute(
                    "UPDATE deliveries SET status = 'dead', reason = 'max_age', updated_at = ?"
                    " WHERE status = 'pending' AND destination = ? AND queued_at < ?" + skip_clause,
                    (now, destination, cutoff, *skip),
                ).rowcount
                if count:
                    expired[destination] = count
            # destinations no longer configured (removed by a reload) use the default max_age
            placeholders = ",".join("?" * len(max_age)) or "''"
            rows = conn.execute(
                "SELECT destination, count(*) FROM deliveries WHERE status = 'pending'"
                f" AND destination NOT IN ({placeholders}) AND queued_at < ? GROUP BY destination",
                (*max_age, now - default_max_age),
            ).fetchall()
            for destination, count in rows:
                conn.execute(
                    "UPDATE deliveries SET status = 'dead', reason = 'max_age', updated_at = ?"
                    " WHERE status = 'pending' AND destination = ? AND queued_at < ?",
                    (now, destination, now - default_max_age),
                )
                expired[destination] = count
            return expired

        return await self.write(run)

    # ---- replay ------------------------------------------------------------------------
    async def requeue(
        self,
        *,
        delivery_id: int | None = None,
        event: str | None = None,
        dead: bool = False,
        destination: str | None = None,
        since: float | None = None,
        pending: bool = False,
    ) -> list[Requeued]:
        """Re-queue matching deliveries; pending ones are made due now, never duplicated.
        `dead` / `pending`: only deliveries in that state (decided in the same statement,
        so one delivered meanwhile is never sent again)."""
        where: list[str] = ["1=1"]
        params: list[Any] = []
        if delivery_id is not None:
            where.append("d.id = ?")
            params.append(delivery_id)
        if event is not None:
            where.append(
                "d.event_row IN (SELECT id FROM events WHERE dedupe_key = ? OR event_id = ? OR CAST(id AS TEXT) = ?)"
            )
            params += [event, event, event]
        if dead:
            where.append("d.status = 'dead'")
        if pending:
            where.append("d.status = 'pending'")
        if destination is not None:
            where.append("d.destination = ?")
            params.append(destination)
        if since is not None:
            where.append("d.queued_at >= ?")
            params.append(since)
        now = time.time()

        def run(conn: sqlite3.Connection) -> list[Requeued]:
            rows = conn.execute(
                "UPDATE deliveries AS d SET status = 'pending', next_attempt_at = ?, updated_at = ?,"
                " attempt_base = CASE WHEN status = 'pending' THEN attempt_base ELSE attempts END,"
                " first_queued_at = CASE WHEN status = 'pending' THEN first_queued_at"
                " ELSE coalesce(first_queued_at, queued_at) END,"
                " queued_at = CASE WHEN status = 'pending' THEN queued_at ELSE ? END,"
                " reason = CASE WHEN status = 'pending' THEN reason ELSE NULL END"
                " WHERE " + " AND ".join(where) + " RETURNING id, event_row, destination",
                (now, now, now, *params),
            ).fetchall()
            return sorted(Requeued(row[0], row[1], row[2]) for row in rows)

        requeued = await self.write(run)
        if requeued:
            self._made_due({r.destination for r in requeued})
        return requeued

    async def add_routes(self, additions: Iterable[tuple[int, str, str | None, str | None]]) -> int:
        """(event_row, destination, rule, journey_key) rows; existing pairs are left alone."""
        rows = list(additions)
        now = time.time()

        def run(conn: sqlite3.Connection) -> int:
            count = 0
            for event_row, destination, rule, journey_key in rows:
                count += conn.execute(
                    "INSERT OR IGNORE INTO deliveries (event_row, destination, rule, journey_key,"
                    " queued_at, next_attempt_at, updated_at) VALUES (?,?,?,?,?,?,?)",
                    (event_row, destination, rule, journey_key, now, now, now),
                ).rowcount
            return count

        count = await self.write(run)
        if count:
            self._made_due({destination for _, destination, _, _ in rows})
        return count

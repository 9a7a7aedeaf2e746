"""The outbox on PostgreSQL, shared by every replica: ingest, claims, outcomes, expiry,
replay and cluster-wide rate slots. Does I/O.

Claims. `due` claims the deliveries it returns: it locks due rows with `FOR UPDATE SKIP
LOCKED` (two replicas asking at once get different rows, neither waits) and gives each a
lease: the owner, a fencing token from one sequence, and an expiry. A claimed row is not
due again until its lease expires (a replica that died or froze), so exactly one replica
sends it. An outcome is recorded only with the token of the current claim: a replica that
froze past its lease and was overtaken finds a newer token and its late outcome is refused.
Lease times use the database's clock, so replicas whose clocks disagree still agree on
whether a lease is live.

Journey order holds across replicas for the same reason as in one process: with `ordered`,
only the first pending delivery of a journey is ever due, and while it is claimed (still
pending) no later one of its journey can be.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.events import Event
from gateway.store.postgres.connection import PostgresConnection
from gateway.store.postgres.writer import IngestJob, IngestWriter, clean
from gateway.store.records import Accepted, AttemptRecord, DueDelivery, Requeued

#: the database clock, in the epoch seconds every time column holds
DB_NOW = "extract(epoch from clock_timestamp())"


class PostgresOutbox(PostgresConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writer = IngestWriter(self)

    async def open(self) -> None:
        await super().open()
        self._writer.start()

    async def close(self) -> None:
        await self._writer.stop()
        await super().close()

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
        accepted = await self._writer.submit(
            IngestJob(event, routes, rules, source_ip, headers, at)
        )
        if accepted.delivery_ids:
            self.recent.add(accepted.event_row, event, len(accepted.delivery_ids))
            self._made_due(destination for destination, _ in routes)
        return accepted

    async def import_events(
        self, events: Iterable[Event], received_at: float, destination: str | None = None
    ) -> int:
        batch = list(events)
        async with self.connection() as conn, conn.transaction():
            rows = await conn.fetch(
                "INSERT INTO events (dedupe_key, event_type, event_id, journey_key, reference_no,"
                " received_at, raw) SELECT k, t, i, j, r, $6, w FROM unnest($1::text[],"
                " $2::text[], $3::text[], $4::text[], $5::text[], $7::bytea[])"
                " AS u(k, t, i, j, r, w) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
                [clean(e.dedupe_key) for e in batch],
                [clean(e.type) for e in batch],
                [clean(e.event_id) for e in batch],
                [clean(e.journey_key) for e in batch],
                [clean(e.reference_no) for e in batch],
                received_at,
                [e.raw for e in batch],
            )
            if destination is not None:
                await conn.execute(
                    "INSERT INTO deliveries (event_row, destination, journey_key, status,"
                    " attempts, queued_at, next_attempt_at, updated_at)"
                    " SELECT id, $1, journey_key, 'delivered', 1, $2, $2, $2 FROM events"
                    " WHERE dedupe_key = ANY($3::text[])"
                    " ON CONFLICT (event_row, destination) DO NOTHING",
                    destination,
                    received_at,
                    [clean(e.dedupe_key) for e in batch],
                )
        return len(rows)

    # ---- claims ------------------------------------------------------------------------
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
        """Claim up to `limit` due deliveries; the lease outlasts an attempt of
        `attempt_timeout` seconds by the store's margin (`storage.lease_margin`)."""
        unclaimed = f"(d.claim_until IS NULL OR d.claim_until < {DB_NOW})"
        if ordered:
            # only a journey's first pending delivery may go: the heads come from one pass
            # over the journey index (DISTINCT ON), a fraction of a microsecond per pending
            # row, where a NOT EXISTS probe per due row costs ~100 times more on the long
            # backlog of a few journeys that an outage of the destination leaves behind.
            # Rows without a journey are each their own head.
            picked = (
                "WITH heads AS (SELECT DISTINCT ON (journey_key) id, next_attempt_at,"
                " claim_until FROM deliveries WHERE status = 'pending' AND destination = $1"
                " AND journey_key IS NOT NULL ORDER BY journey_key, id),"
                " candidates AS (SELECT id FROM heads d WHERE d.next_attempt_at <= $2"
                f" AND {unclaimed} UNION ALL (SELECT id FROM deliveries d"
                " WHERE d.status = 'pending' AND d.destination = $1 AND d.journey_key IS NULL"
                f" AND d.next_attempt_at <= $2 AND {unclaimed}"
                " ORDER BY d.next_attempt_at, d.id LIMIT $4 * 4)),"
                " picked AS (SELECT d.id FROM deliveries d JOIN candidates c ON c.id = d.id"
                # rechecked on the locked row: another replica may have claimed or finished
                # it since this statement's snapshot
                f" WHERE d.status = 'pending' AND {unclaimed} AND NOT (d.id = ANY($3::bigint[]))"
                " ORDER BY d.next_attempt_at, d.id LIMIT $4 FOR UPDATE OF d SKIP LOCKED)"
            )
        else:
            picked = (
                "WITH picked AS (SELECT d.id FROM deliveries d"
                " WHERE d.status = 'pending' AND d.destination = $1 AND d.next_attempt_at <= $2"
                f" AND {unclaimed} AND NOT (d.id = ANY($3::bigint[]))"
                " ORDER BY d.next_attempt_at, d.id LIMIT $4 FOR UPDATE OF d SKIP LOCKED)"
            )
        rows = await self.fetch(
            picked + " UPDATE deliveries d SET claim_owner = $5,"
            f" claim_token = nextval('claim_tokens'), claim_until = {DB_NOW} + $6"
            " FROM picked, events e WHERE d.id = picked.id AND e.id = d.event_row"
            " RETURNING d.id, d.event_row, d.destination, d.attempts, d.queued_at, d.rule,"
            " e.raw, d.attempt_base, d.claim_token, d.next_attempt_at",
            destination,
            now,
            sorted(exclude),
            limit,
            self.owner,
            attempt_timeout + self.lease_margin,
        )
        rows = sorted(rows, key=lambda r: (r["next_attempt_at"], r["id"]))
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
                r["claim_token"],
                recent(r["event_row"], r["raw"]),
            )
            for r in rows
        ]

    async def extend_leases(
        self, claims: Sequence[tuple[int, int]], attempt_timeout: float
    ) -> set[int]:
        """Push the expiry of these (delivery id, token) claims to `attempt_timeout` plus the margin
        from now; the ids whose claim is no longer ours (overtaken, replayed, finished)."""
        if not claims:
            return set()
        rows = await self.fetch(
            f"UPDATE deliveries d SET claim_until = {DB_NOW} + $3"
            " FROM unnest($1::bigint[], $2::bigint[]) AS c(id, token)"
            " WHERE d.id = c.id AND d.claim_token = c.token AND d.status = 'pending'"
            " RETURNING d.id",
            [delivery for delivery, _ in claims],
            [token for _, token in claims],
            attempt_timeout + self.lease_margin,
        )
        return {delivery for delivery, _ in claims} - {r["id"] for r in rows}

    async def release(self, claims: Sequence[tuple[int, int]]) -> None:
        """Give claims back without an outcome (shutdown): due again at once elsewhere."""
        if claims:
            await self.execute(
                "UPDATE deliveries d SET claim_owner = NULL, claim_token = NULL,"
                " claim_until = NULL FROM unnest($1::bigint[], $2::bigint[]) AS c(id, token)"
                " WHERE d.id = c.id AND d.claim_token = c.token",
                [delivery for delivery, _ in claims],
                [token for _, token in claims],
            )

    async def reserve_rate_slot(
        self, destination: str, interval: float, restart: bool = False
    ) -> float:
        """The cluster-wide send slot for a rate-limited destination: seconds to wait before
        sending. One row per destination, moved forward by `interval` per send, atomically,
        so N replicas together send at the configured rate. `restart` (the first send after
        a reload changed the rate): the slots booked ahead at the old spacing are dropped."""
        start = DB_NOW if restart else f"greatest(s.next_at, {DB_NOW})"
        async with self.connection() as conn:
            wait: float = await conn.fetchval(
                f"INSERT INTO rate_slots AS s (destination, next_at) VALUES ($1, {DB_NOW} + $2)"
                f" ON CONFLICT (destination) DO UPDATE SET next_at = {start} + $2"
                f" RETURNING next_at - $2 - {DB_NOW}",
                destination,
                interval,
            )
        return max(0.0, wait)

    # ---- outcomes ----------------------------------------------------------------------
    async def record(self, records: Sequence[AttemptRecord]) -> set[int]:
        """Outcomes, each applied only if its claim is still the current one and the
        delivery still pending; returns the ids refused (their attempt is not recorded)."""
        if not records:
            return set()
        now = time.time()
        statuses = [
            {"delivered": "delivered", "dead": "dead"}.get(r.outcome, "pending") for r in records
        ]
        async with self.connection() as conn, conn.transaction():
            applied = await conn.fetch(
                "UPDATE deliveries d SET status = c.status, attempts = greatest(d.attempts,"
                " c.number), updated_at = $9, next_attempt_at = coalesce(c.next_at,"
                " d.next_attempt_at), reason = c.reason, last_error = c.detail,"
                " claim_owner = NULL, claim_token = NULL, claim_until = NULL,"
                # an uncounted attempt (a shortage of our own) moves the budget's base with it
                " attempt_base = d.attempt_base + c.uncounted"
                " FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::text[], $5::float8[],"
                " $6::text[], $7::text[], $8::int[], $10::int[]) AS c(id, token, number, status,"
                " next_at, reason, detail, position, uncounted)"
                " WHERE d.id = c.id AND d.status = 'pending'"
                " AND d.claim_token IS NOT DISTINCT FROM c.token"
                " RETURNING c.position, d.destination",
                [r.delivery_id for r in records],
                [r.claim or None for r in records],
                [r.number for r in records],
                statuses,
                [r.next_attempt_at for r in records],
                [clean(r.reason) for r in records],
                [clean(r.detail) for r in records],
                list(range(len(records))),
                now,
                [0 if r.counted else 1 for r in records],
            )
            kept = [records[row["position"]] for row in applied]
            if kept:
                await conn.executemany(
                    "INSERT INTO attempts (delivery_id, number, started_at, duration, outcome,"
                    " reason, status_code, detail, output, claim_owner)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    [
                        (
                            r.delivery_id,
                            r.number,
                            r.started_at,
                            r.duration,
                            r.outcome,
                            clean(r.reason),
                            r.status_code,
                            clean(r.detail),
                            clean(r.output),
                            self.owner,
                        )
                        for r in kept
                    ],
                )
                # a finished delivery may free the next one of its journey on another replica
                await self.notify(conn, {row["destination"] for row in applied})
        return {r.delivery_id for r in records} - {r.delivery_id for r in kept}

    async def expire(
        self,
        max_age: dict[str, float],
        default_max_age: float,
        now: float,
        in_flight: set[int] | None = None,
    ) -> dict[str, int]:
        """Pending deliveries past their destination's max_age become dead; those with an
        attempt in flight here or a live claim anywhere are left to that attempt."""
        names = list(max_age)
        rows = await self.fetch(
            "WITH ages AS (SELECT * FROM unnest($1::text[], $2::float8[]) AS a(destination, age))"
            " UPDATE deliveries d SET status = 'dead', reason = 'max_age', updated_at = $3,"
            " claim_owner = NULL, claim_token = NULL, claim_until = NULL"
            " WHERE d.status = 'pending'"
            " AND d.queued_at < $3 - coalesce((SELECT age FROM ages a"
            " WHERE a.destination = d.destination), $4)"
            " AND NOT (d.id = ANY($5::bigint[]))"
            f" AND (d.claim_until IS NULL OR d.claim_until < {DB_NOW})"
            " RETURNING d.destination",
            names,
            [max_age[n] for n in names],
            now,
            default_max_age,
            sorted(in_flight or ()),
        )
        expired: dict[str, int] = {}
        for row in rows:
            expired[row["destination"]] = expired.get(row["destination"], 0) + 1
        return expired

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
        """Re-queue matching deliveries; pending ones are made due now, never duplicated (a
        claimed one keeps its claim: the attempt in flight decides). `dead` / `pending`:
        only deliveries in that state, decided in the same statement."""
        now = time.time()
        where: list[str] = ["true"]
        params: list[Any] = [now]
        if delivery_id is not None:
            params.append(delivery_id)
            where.append(f"d.id = ${len(params)}")
        if event is not None:
            params.append(event)
            n = len(params)
            where.append(
                f"d.event_row IN (SELECT id FROM events WHERE dedupe_key = ${n}"
                f" OR event_id = ${n} OR id::text = ${n})"
            )
        if dead:
            where.append("d.status = 'dead'")
        if pending:
            where.append("d.status = 'pending'")
        if destination is not None:
            params.append(destination)
            where.append(f"d.destination = ${len(params)}")
        if since is not None:
            params.append(since)
            where.append(f"d.queued_at >= ${len(params)}")
        async with self.connection() as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE deliveries AS d SET status = 'pending', next_attempt_at = $1,"
                " updated_at = $1,"
                " attempt_base = CASE WHEN status = 'pending' THEN attempt_base ELSE attempts END,"
                " first_queued_at = CASE WHEN status = 'pending' THEN first_queued_at"
                " ELSE coalesce(first_queued_at, queued_at) END,"
                " queued_at = CASE WHEN status = 'pending' THEN queued_at ELSE $1 END,"
                " reason = CASE WHEN status = 'pending' THEN reason ELSE NULL END"
                " WHERE " + " AND ".join(where) + " RETURNING d.id, d.event_row, d.destination",
                *params,
            )
            if rows:
                await self.notify(conn, {r["destination"] for r in rows})
        requeued = sorted(Requeued(r["id"], r["event_row"], r["destination"]) for r in rows)
        if requeued:
            self._made_due({r.destination for r in requeued})
        return requeued

    async def add_routes(self, additions: Iterable[tuple[int, str, str | None, str | None]]) -> int:
        """(event_row, destination, rule, journey_key) rows; existing pairs are left alone."""
        rows = list(additions)
        if not rows:
            return 0
        now = time.time()
        async with self.connection() as conn, conn.transaction():
            added = await conn.fetch(
                "INSERT INTO deliveries (event_row, destination, rule, journey_key, queued_at,"
                " next_attempt_at, updated_at) SELECT r, d, u, j, $5, $5, $5 FROM"
                " unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS t(r, d, u, j)"
                " ON CONFLICT (event_row, destination) DO NOTHING RETURNING destination",
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [clean(r[3]) for r in rows],
                now,
            )
            if added:
                await self.notify(conn, {r["destination"] for r in added})
        if added:
            self._made_due({r["destination"] for r in added})
        return len(added)

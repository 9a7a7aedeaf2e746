"""The commands over the store: `events list/show`, `deliveries list/show`, `replay`. They
read (and replay writes) the database a running gateway uses; they print and return an
exit code."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from gateway import idwise
from gateway.cli.config_commands import load
from gateway.cli.output import CommandError, Output, local_time, seconds, utc_time
from gateway.config.model import Config
from gateway.delivery.reroute import reroute
from gateway.errors import StoreError
from gateway.store import EventFilter, Requeued, Store, create_store
from gateway.units import parse_duration

T = TypeVar("T")


def parse_since(text: str, now: float | None = None) -> float:
    """`2h` (ago) or an ISO-8601 time."""
    now = time.time() if now is None else now
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is neither a duration (2h) nor an ISO time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def with_store(
    args: argparse.Namespace, out: Output, action: Callable[[Store, Config], Awaitable[T]]
) -> T:
    """Run `action` on the store of the config; a config or store failure is a
    `CommandError` (the config's problems are printed first)."""
    config = load(args, out)
    if config is None:
        raise CommandError("the config does not load (see above)")
    if config.storage.backend == "sqlite" and not config.storage.path.exists():
        raise CommandError(
            f"store error: no database at {config.storage.path} (has the gateway run yet?)"
        )

    async def run() -> T:
        store = create_store(config.storage, for_cli=True)
        await store.open()
        try:
            return await action(store, config)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except StoreError as exc:
        raise CommandError(f"store error: {exc}") from None


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    event_type = args.type
    return {
        "since": parse_since(args.since) if args.since else None,
        "event_type": (idwise.find_event_type(event_type) or event_type) if event_type else None,
        "journey": args.journey,
        "status": args.status,
        "destination": args.destination,
        "limit": args.limit,
    }


# -------------------------------------------------------------------------------- events
EVENT_COLUMNS = [
    ("id", "ID"),
    ("received", "RECEIVED (UTC)"),
    ("event_type", "EVENT"),
    ("dedupe_key", "EVENT ID"),
    ("journey_key", "JOURNEY"),
    ("rules", "RULES"),
    ("deliveries", "DELIVERIES"),
]
DELIVERY_COLUMNS = [
    ("id", "ID"),
    ("queued", "QUEUED (UTC)"),
    ("event_type", "EVENT"),
    ("destination", "DESTINATION"),
    ("status", "STATUS"),
    ("attempts", "ATTEMPTS"),
    ("next", "NEXT ATTEMPT"),
    ("reason", "REASON"),
]


def cmd_events(args: argparse.Namespace, out: Output) -> int:
    if args.action == "show":
        row = with_store(args, out, lambda store, _: store.get_event(args.id))
        if row is None:
            raise CommandError(f"no event {args.id}")
        if args.json:
            out.json(row)
        else:
            show_event(out, row)
        return 0
    filters = _filters(args)
    # the console's query: the same filters and keyset cursor (`--before ID`), unbounded
    query = EventFilter(
        event_type=filters["event_type"],
        journey=args.journey,
        reference=args.reference,
        outcome=args.status,
        destination=args.destination,
        since=filters["since"],
        until=parse_since(args.until) if args.until else None,
        text=args.text,
    )
    page = with_store(
        args, out, lambda store, _: store.page_events(query, before=args.before, limit=args.limit)
    )
    rows = page.rows
    if args.json:
        out.json(rows)
        return 0
    for row in rows:
        row["received"] = utc_time(row["received_at"])
        row["rules"] = ",".join(row["rules"]) or "-"
        row["deliveries"] = f"{row['deliveries']} ({row['pending']} pending)"
    out.table(rows, EVENT_COLUMNS)
    return 0


def show_event(out: Output, row: dict[str, Any]) -> None:
    """One event for people: what it is, when it came, its payload, its deliveries."""
    _fields(
        out,
        f"event {row['id']}: {row['event_type']}",
        [
            ("eventId", row.get("event_id") or row["dedupe_key"]),
            ("journey", row.get("journey_key")),
            ("reference", row.get("reference_no")),
            ("received", local_time(row["received_at"])),
            ("from", row.get("source_ip")),
            ("rules", ", ".join(row["rules"]) or "(none matched)"),
        ],
    )
    out.line("payload:")
    out.json(row["payload"])
    out.line("deliveries:")
    deliveries = row["deliveries"]
    for delivery in deliveries:
        delivery["queued"] = local_time(delivery.get("first_queued_at") or delivery["queued_at"])
        delivery["next"] = _next_attempt(delivery)
    out.table(
        deliveries,
        [
            ("id", "ID"),
            ("destination", "DESTINATION"),
            ("status", "STATUS"),
            ("attempts", "ATTEMPTS"),
            ("queued", "QUEUED"),
            ("next", "NEXT ATTEMPT"),
            ("reason", "REASON"),
        ],
    )


def _fields(out: Output, title: str, fields: Sequence[tuple[str, Any]]) -> None:
    out.line(title)
    width = max(len(name) for name, _ in fields) + 1
    for name, value in fields:
        if value is not None and value != "":
            out.line(f"  {(name + ':').ljust(width)} {value}")


def _next_attempt(delivery: dict[str, Any]) -> str:
    if delivery["status"] != "pending":
        return "-"
    return local_time(delivery["next_attempt_at"])


# ---------------------------------------------------------------------------- deliveries
def cmd_deliveries(args: argparse.Namespace, out: Output) -> int:
    if args.action == "show":
        row = with_store(args, out, lambda store, _: store.get_delivery(args.id))
        if row is None:
            raise CommandError(f"no delivery {args.id}")
        if args.json:
            out.json(row)
        else:
            show_delivery(out, row)
        return 0
    filters = _filters(args)
    rows = with_store(args, out, lambda store, _: store.list_deliveries(**filters))
    if args.json:
        out.json(rows)
        return 0
    for row in rows:
        row["queued"] = utc_time(row.get("first_queued_at") or row["queued_at"])
        row["next"] = utc_time(row["next_attempt_at"]) if row["status"] == "pending" else "-"
    out.table(rows, DELIVERY_COLUMNS)
    return 0


def show_delivery(out: Output, row: dict[str, Any]) -> None:
    """One delivery for people: its state, when it was queued (and replayed), every attempt."""
    replayed = row.get("first_queued_at") is not None
    status = row["status"] + (f" ({row['reason']})" if row.get("reason") else "")
    _fields(
        out,
        f"delivery {row['id']}: {row['event_type']} -> {row['destination']}",
        [
            ("event", f"{row['event_row']} ({row['dedupe_key']})"),
            ("rule", row.get("rule")),
            ("journey", row.get("journey_key")),
            ("status", status),
            ("attempts", row["attempts"]),
            ("queued", local_time(row["first_queued_at"] if replayed else row["queued_at"])),
            ("replayed", local_time(row["queued_at"]) if replayed else None),
            ("next attempt", _next_attempt(row) if row["status"] == "pending" else None),
            ("last error", row.get("last_error") if row["status"] != "delivered" else None),
        ],
    )
    out.line("attempts:")
    attempts = row["attempt_history"]
    for attempt in attempts:
        attempt["started"] = local_time(attempt["started_at"])
        attempt["took"] = seconds(attempt["duration"])
        output = attempt.get("output") or ""
        attempt["output"] = output if len(output) <= 60 else output[:57] + "..."
    out.table(
        attempts,
        [
            ("number", "#"),
            ("started", "STARTED"),
            ("took", "TOOK"),
            ("outcome", "OUTCOME"),
            ("reason", "REASON"),
            ("status_code", "STATUS"),
            ("detail", "DETAIL"),
            ("output", "OUTPUT"),
        ],
    )
    # (the table escapes newlines and control bytes: script output is often multi-line)


# -------------------------------------------------------------------------------- replay
def cmd_replay(args: argparse.Namespace, out: Output) -> int:
    since = parse_since(args.since) if args.since else None
    if not (args.delivery or args.event_id or args.dead or since or args.reroute):
        raise CommandError(
            "say what to replay: --delivery ID, --event-id ID, --dead [--destination D]"
            " or --since T",
            2,
        )
    if args.reroute and not (args.event_id or since):
        raise CommandError(
            "--reroute needs --event-id ID or --since T (it re-evaluates those stored events)", 2
        )
    if args.reroute:
        return _reroute(args, out, since)

    async def run(store: Store, _: Config) -> list[Requeued]:
        await _must_exist(store, args.delivery, args.event_id)
        return await store.requeue(
            delivery_id=args.delivery,
            event=args.event_id,
            dead=args.dead,
            destination=args.destination,
            since=since,
        )

    requeued = with_store(args, out, run)
    per_destination = Counter(r.destination for r in requeued)
    if args.json:
        out.json(
            {
                "queued": len(requeued),
                "destinations": dict(sorted(per_destination.items())),
                "deliveries": [
                    {"delivery": r.delivery_id, "event": r.event_row, "destination": r.destination}
                    for r in requeued
                ],
            }
        )
        return 0
    out.line(f"re-queued {len(requeued)} delivery(ies){_summary(per_destination)}")
    return 0


async def _must_exist(store: Store, delivery: int | None, event: str | None) -> None:
    """An id that names nothing is a mistake to report, not "0 replayed"."""
    if delivery is not None and await store.get_delivery(delivery) is None:
        raise CommandError(f"no delivery {delivery}")
    if event is not None and await store.get_event(event) is None:
        raise CommandError(f"no event {event} (give a row id, an eventId or a dedupe key)")


def _summary(per_destination: Counter[str]) -> str:
    if not per_destination:
        return ": nothing matched"
    return ": " + ", ".join(f"{name} ({count})" for name, count in sorted(per_destination.items()))


def _reroute(args: argparse.Namespace, out: Output, since: float | None) -> int:
    async def run(store: Store, config: Config) -> Any:
        await _must_exist(store, None, args.event_id)
        return await reroute(
            store, config, event=args.event_id, since=since, destination=args.destination
        )

    result = with_store(args, out, run)
    per_destination = Counter(name for _, name in result.queued)
    if args.json:
        out.json(
            {
                "events": result.events,
                "queued": len(result.queued),
                "destinations": dict(sorted(per_destination.items())),
                "deliveries": [{"event": row, "destination": name} for row, name in result.queued],
            }
        )
        return 0
    out.line(
        f"rerouted {result.events} event(s): {len(result.queued)} new delivery(ies) queued"
        f"{_summary(per_destination) if result.queued else ''}"
    )
    if result.queued:
        out.table(
            [{"event": row, "destination": name} for row, name in result.queued],
            [("event", "EVENT"), ("destination", "DESTINATION")],
        )
    return 0

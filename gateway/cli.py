"""Command line: each subcommand parses its flags, calls the library, prints, returns an
exit code. No logic of its own beyond presentation."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway import __version__, idwise
from gateway.config.load import check_config, load_config, resolve_config_path
from gateway.config.model import Config
from gateway.delivery.reroute import reroute
from gateway.errors import ConfigError, PayloadError, StoreError
from gateway.events import parse_event
from gateway.rules import explain_rules, match_rules
from gateway.secret import Redactor
from gateway.store import Store, create_store
from gateway.units import parse_duration


class Output:
    """Standard output and error for one command, through the redactor of the config it
    loads (every credential that config holds is masked in whatever is printed)."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        self.redactor = redactor or Redactor()

    def line(self, text: str = "") -> None:
        print(self.redactor.redact(text))

    def json(self, value: Any) -> None:
        text = self.redactor.redact_json(value)
        print(json.dumps(json.loads(text), indent=2, ensure_ascii=False))

    def error(self, text: str) -> None:
        print(self.redactor.redact(text), file=sys.stderr)


def _time(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


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


def _table(out: Output, rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    if not rows:
        out.line("(none)")
        return
    cells = [
        [str(row.get(key, "") if row.get(key) is not None else "-") for key, _ in columns]
        for row in rows
    ]
    widths = [max(len(title), *(len(c[i]) for c in cells)) for i, (_, title) in enumerate(columns)]
    out.line("  ".join(title.ljust(widths[i]) for i, (_, title) in enumerate(columns)).rstrip())
    for c in cells:
        out.line("  ".join(value.ljust(widths[i]) for i, value in enumerate(c)).rstrip())


def _load(args: argparse.Namespace, out: Output) -> Config | None:
    path = resolve_config_path(args.config)
    try:
        return load_config(path, redactor=out.redactor)
    except ConfigError as exc:
        for problem in exc.problems:
            out.error(str(problem))
        return None


# ------------------------------------------------------------------------------ commands
def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    from gateway.server import serve

    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop  # uvloop.install() is deprecated
    except ImportError:  # pragma: no cover - optional on non-Linux platforms
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(
            serve(resolve_config_path(args.config), watch=args.watch, log_format=args.log_format)
        )


def cmd_check(args: argparse.Namespace, out: Output) -> int:
    path = resolve_config_path(args.config)
    config, problems = check_config(path, redactor=out.redactor)
    for problem in sorted(problems, key=lambda p: (p.file, p.line)):
        out.line(str(problem))
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity == "warning"]
    if errors or config is None:
        out.line(f"{path}: invalid: {len(errors)} error(s), {len(warnings)} warning(s)")
        return 1
    out.line(
        f"{path}: OK: {len(config.rules)} rule(s) from {len(config.files)} file(s), "
        f"{len(config.destinations)} destination(s), {len(warnings)} warning(s)"
    )
    return 1 if args.strict and warnings else 0


def cmd_route(args: argparse.Namespace, out: Output) -> int:
    config = _load(args, out)
    if config is None:
        return 1
    raw = sys.stdin.buffer.read() if args.payload == "-" else Path(args.payload).read_bytes()
    try:
        event = parse_event(raw)
    except PayloadError as exc:
        print(f"payload rejected ({exc.reason}): {exc}", file=sys.stderr)
        return 1
    routing = explain_rules(config.rules, config.unmatched, event.type, event.document)
    assert (
        tuple(
            d for d, _ in match_rules(config.rules, config.unmatched, event.type, event.document)[0]
        )
        == routing.destinations
    )
    rendered: dict[str, Any] = {}
    for name in routing.destinations:
        destination = config.destinations[name]
        try:
            rendered[name] = {
                "type": destination.type,
                "chosen_by": routing.chosen_by[name],
                **destination.preview(event),
            }
        except Exception as exc:
            rendered[name] = {"type": destination.type, "error": f"rendering failed: {exc}"}
    if args.json:
        out.json(
            {
                "event": event.type,
                "eventId": event.dedupe_key,
                "journey": event.journey_key,
                "rules": [
                    {
                        "name": o.rule.name,
                        "matched": o.matched,
                        "reason": o.reason,
                        "evaluated": o.evaluated,
                        "file": o.rule.file,
                        "line": o.rule.line,
                        "stop": o.rule.stop,
                    }
                    for o in routing.outcomes
                ],
                "destinations": list(routing.destinations),
                "rendered": rendered,
            }
        )
    else:
        out.line(
            f"event: {event.type}  eventId: {event.dedupe_key}  journey: {event.journey_key or '-'}"
        )
        out.line("rules:")
        for o in routing.outcomes:
            mark = "MATCH" if o.matched else "  -  "
            stop = " [stop]" if o.rule.stop and o.matched else ""
            out.line(f"  {mark} {o.rule.name}{stop}  ({o.rule.file}:{o.rule.line})")
            out.line(f"        {o.reason}")
        if not any(o.matched for o in routing.outcomes):
            out.line(
                f"  no rule matched; unmatched -> {', '.join(config.unmatched) or '(nothing)'}"
            )
        out.line(f"destinations: {', '.join(routing.destinations) or '(none)'}")
        for name, output in rendered.items():
            out.line(f"\n--- {name} ({output['type']}, chosen by {output.get('chosen_by', '?')})")
            out.line(
                json.dumps(
                    {k: v for k, v in output.items() if k not in ("type", "chosen_by")},
                    indent=2,
                    ensure_ascii=False,
                )
            )
    if args.expect is not None:
        expected = {name.strip() for name in args.expect.split(",") if name.strip()}
        if expected != set(routing.destinations):
            print(
                f"expected destinations {sorted(expected)}, got {sorted(routing.destinations)}",
                file=sys.stderr,
            )
            return 1
    return 0


def cmd_sample(args: argparse.Namespace, out: Output) -> int:
    if not args.event:
        for event_type in idwise.EVENT_TYPES:
            print(event_type)
        return 0
    found = idwise.find_event_type(args.event)
    if found is None:
        print(
            f"unknown event type '{args.event}'; one of: {', '.join(idwise.EVENT_TYPES)}",
            file=sys.stderr,
        )
        return 1
    sys.stdout.write(idwise.sample_bytes(found).decode())
    return 0


async def _with_store(config: Config, action: Any) -> Any:
    if not config.storage.path.exists():
        raise StoreError(
            "missing", f"no database at {config.storage.path} (has the gateway run yet?)"
        )
    store = create_store(config.storage, for_cli=True)
    await store.open()
    try:
        return await action(store)
    finally:
        await store.close()


def _store_command(args: argparse.Namespace, out: Output, action: Any) -> tuple[int, Any]:
    config = _load(args, out)
    if config is None:
        return 1, None
    try:
        return 0, asyncio.run(_with_store(config, lambda store: action(store, config)))
    except StoreError as exc:
        out.error(f"store error: {exc}")
        return 1, None


def cmd_events(args: argparse.Namespace, out: Output) -> int:
    if args.action == "show":
        code, row = _store_command(args, out, lambda store, _: store.get_event(args.id))
        if code:
            return code
        if row is None:
            print(f"no event {args.id}", file=sys.stderr)
            return 1
        out.json(row)
        return 0
    since = parse_since(args.since) if args.since else None
    event_type = (idwise.find_event_type(args.event) or args.event) if args.event else None
    code, rows = _store_command(
        args,
        out,
        lambda store, _: store.list_events(
            event_type=event_type,
            since=since,
            journey=args.journey,
            status=args.status,
            destination=args.destination,
            limit=args.limit,
        ),
    )
    if code:
        return code
    if args.json:
        out.json(rows)
        return 0
    for row in rows:
        row["received"] = _time(row["received_at"])
        row["rules"] = ",".join(row["rules"]) or "-"
        row["deliveries"] = f"{row['deliveries']} ({row['pending']} pending)"
    _table(
        out,
        rows,
        [
            ("id", "ID"),
            ("received", "RECEIVED (UTC)"),
            ("event_type", "EVENT"),
            ("dedupe_key", "EVENT ID"),
            ("journey_key", "JOURNEY"),
            ("rules", "RULES"),
            ("deliveries", "DELIVERIES"),
        ],
    )
    return 0


def cmd_deliveries(args: argparse.Namespace, out: Output) -> int:
    if args.action == "show":
        code, row = _store_command(args, out, lambda store, _: store.get_delivery(args.id))
        if code:
            return code
        if row is None:
            print(f"no delivery {args.id}", file=sys.stderr)
            return 1
        out.json(row)
        return 0
    since = parse_since(args.since) if args.since else None
    event_type = (idwise.find_event_type(args.event) or args.event) if args.event else None
    code, rows = _store_command(
        args,
        out,
        lambda store, _: store.list_deliveries(
            status=args.status,
            destination=args.destination,
            event_type=event_type,
            journey=args.journey,
            since=since,
            limit=args.limit,
        ),
    )
    if code:
        return code
    if args.json:
        out.json(rows)
        return 0
    for row in rows:
        row["queued"] = _time(row["queued_at"])
        row["next"] = _time(row["next_attempt_at"]) if row["status"] == "pending" else "-"
    _table(
        out,
        rows,
        [
            ("id", "ID"),
            ("queued", "QUEUED (UTC)"),
            ("event_type", "EVENT"),
            ("destination", "DESTINATION"),
            ("status", "STATUS"),
            ("attempts", "ATTEMPTS"),
            ("next", "NEXT ATTEMPT"),
            ("reason", "REASON"),
        ],
    )
    return 0


def cmd_replay(args: argparse.Namespace, out: Output) -> int:
    since = parse_since(args.since) if args.since else None
    if not (args.delivery or args.event or args.dead or since or args.reroute):
        print(
            "say what to replay: --delivery ID, --event ID, --dead [--destination D] or --since T",
            file=sys.stderr,
        )
        return 2
    if args.reroute and not (args.event or since):
        print(
            "--reroute needs --event ID or --since T (it re-evaluates those stored events)",
            file=sys.stderr,
        )
        return 2

    async def run(store: Store, config: Config) -> str:
        if args.reroute:
            result = await reroute(
                store, config, event=args.event, since=since, destination=args.destination
            )
            return (
                f"rerouted {result.events} event(s): {len(result.queued)} new delivery(ies) queued"
            )
        count = await store.replay(
            delivery_id=args.delivery,
            event=args.event,
            dead=args.dead,
            destination=args.destination,
            since=since,
        )
        return f"re-queued {count} delivery(ies)"

    code, message = _store_command(args, out, run)
    if code == 0:
        out.line(message)
    return code


# -------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="idwise-gateway", description="Gateway for IDWise webhooks."
    )
    parser.add_argument("--version", action="version", version=f"idwise-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "-c", "--config", help="config file (default $IDWISE_GATEWAY_CONFIG or ./config.yaml)"
        )
        return p

    def listing(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="JSON array instead of a table")
        p.add_argument(
            "--limit", type=int, default=50, help="at most N rows, newest first (default 50)"
        )
        p.add_argument("--event", help="event type, e.g. 'Finished Journey'")
        p.add_argument(
            "--journey", help="journey key (journeyId / spotCheckJourneyId / referenceNo)"
        )
        p.add_argument("--since", help="duration ago (2h) or ISO time")
        p.add_argument("--status", choices=["pending", "delivered", "dead"])
        p.add_argument("--destination")

    p = command("serve", "run the gateway")
    p.add_argument("--watch", action="store_true", help="reload when config or rule files change")
    p.add_argument(
        "--log-format", choices=["json", "text"], help="log format (default from config: json)"
    )
    p.set_defaults(func=cmd_serve)

    p = command("check", "validate config, rules and templates")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.set_defaults(func=cmd_check)

    p = command("route", "dry run: which rules match a payload and what would be sent")
    p.add_argument("payload", help="payload JSON file, or - for stdin")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--expect", help="comma-separated destinations; exit 1 unless exactly these are chosen"
    )
    p.set_defaults(func=cmd_route)

    p = command("sample", "print a sample payload of an IDWise event type (no argument: list them)")
    p.add_argument("event", nargs="?")
    p.set_defaults(func=cmd_sample)

    events = sub.add_parser("events", help="stored events")
    events_sub = events.add_subparsers(dest="action", required=True)
    p = events_sub.add_parser("list", help="list stored events")
    p.add_argument("-c", "--config")
    listing(p)
    p.set_defaults(func=cmd_events)
    p = events_sub.add_parser("show", help="one event with its payload and deliveries")
    p.add_argument("-c", "--config")
    p.add_argument("--json", action="store_true", help="JSON output (the default for show)")
    p.add_argument("id", help="row id, eventId or dedupe key")
    p.set_defaults(func=cmd_events)

    deliveries = sub.add_parser("deliveries", help="deliveries and their attempts")
    deliveries_sub = deliveries.add_subparsers(dest="action", required=True)
    p = deliveries_sub.add_parser("list", help="list deliveries")
    p.add_argument("-c", "--config")
    listing(p)
    p.set_defaults(func=cmd_deliveries)
    p = deliveries_sub.add_parser("show", help="one delivery with its attempt history")
    p.add_argument("-c", "--config")
    p.add_argument("--json", action="store_true", help="JSON output (the default for show)")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_deliveries)

    p = command("replay", "re-queue deliveries (a running gateway picks them up)")
    p.add_argument("--delivery", type=int, help="one delivery id")
    p.add_argument("--event", help="all deliveries of one event (row id, eventId or dedupe key)")
    p.add_argument("--dead", action="store_true", help="dead deliveries")
    p.add_argument("--destination", help="only to this destination")
    p.add_argument("--since", help="queued since (2h, or ISO time)")
    p.add_argument(
        "--reroute",
        action="store_true",
        help="re-evaluate stored events against the current rules; queue only new destinations",
    )
    p.set_defaults(func=cmd_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args, Output())
    except argparse.ArgumentTypeError as exc:
        print(f"idwise-gateway: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    return code

"""The argument parser: every subcommand, its flags and help, the exit codes, and the
spellings kept for compatibility (each prints a one-line deprecation note). Pure."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from gateway import __version__
from gateway.cli.payloads import parse_assignment

EXIT_CODES = """\
exit codes:
  0    success (check: valid; route --expect: exactly those destinations; send: 2xx answer)
  1    the command ran and the answer is no: invalid config, warnings under --strict,
       route --expect mismatch, unknown id, payload rejected or unreadable, store error,
       send got a non-2xx answer or no answer
  2    wrong usage: unknown flag, missing argument, nothing to replay
  130  interrupted (Ctrl-C)
"""

CONFIG_HELP = "config file (default $IDWISE_GATEWAY_CONFIG or ./config.yaml)"


class Deprecated(argparse.Action):
    """An old spelling that still works: stores into the new option's `dest` and says once,
    on stderr, which spelling to use instead."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        self.instead: str = kwargs.pop("instead")
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(
            f"idwise-gateway: note: {option_string} is deprecated here; use {self.instead}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


Handler = Callable[..., int]


class _Builder:
    """Adds subcommands with the options every one of them shares."""

    def __init__(self, sub: Any, handlers: dict[str, Handler]) -> None:
        self.sub = sub
        self.handlers = handlers

    def command(self, sub: Any, name: str, help_text: str, handler: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # SUPPRESS: a -c given before the subcommand is not overwritten by this default
        p.add_argument("-c", "--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
        p.set_defaults(func=self.handlers[handler])
        return p

    def group(self, name: str, help_text: str) -> Any:
        parser = self.sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("-c", "--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
        return parser.add_subparsers(dest="action", required=True, metavar="ACTION")


def listing(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="JSON array instead of a table")
    p.add_argument(
        "--limit", type=int, default=50, help="at most N rows, newest first (default 50)"
    )
    p.add_argument("--type", help="event type, e.g. 'Finished Journey'")
    p.add_argument(
        "--event", dest="type", action=Deprecated, instead="--type", help=argparse.SUPPRESS
    )
    p.add_argument("--journey", help="journey key (journeyId / spotCheckJourneyId / referenceNo)")
    p.add_argument("--since", help="duration ago (2h) or ISO time")
    p.add_argument("--status", choices=["pending", "delivered", "dead"])
    p.add_argument("--destination", help="only deliveries to this destination")


def overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--variant", help="a documented variant of the sample (see `sample` without arguments)"
    )
    p.add_argument(
        "--set",
        action="append",
        type=parse_assignment,
        default=[],
        metavar="PATH=VALUE",
        help="set a field (body.systemDecision=Refer; JSON values keep their type: =2, =null)",
    )


def build_parser(handlers: dict[str, Handler]) -> argparse.ArgumentParser:
    """The whole command line; `handlers` maps a command's name to its function."""
    parser = argparse.ArgumentParser(
        prog="idwise-gateway",
        description="Gateway for IDWise webhooks.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"idwise-gateway {__version__}")
    parser.add_argument("-c", "--config", help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    build = _Builder(sub, handlers)
    _config_commands(build)
    _payload_commands(build)
    _store_commands(build)
    p = build.command(sub, "completion", "print a shell completion script", "completion")
    p.add_argument("shell", choices=["bash", "zsh"])
    return parser


def _config_commands(build: _Builder) -> None:
    p = build.command(build.sub, "serve", "run the gateway", "serve")
    p.add_argument("--watch", action="store_true", help="reload when config or rule files change")
    p.add_argument(
        "--log-format", choices=["json", "text"], help="log format (default from config: json)"
    )
    p = build.command(build.sub, "check", "validate config, rules and templates", "check")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.add_argument("--json", action="store_true", help="the result and every problem as JSON")
    p = build.command(
        build.sub, "route", "dry run: which rules match a payload and what would be sent", "route"
    )
    p.add_argument("payload", help="payload JSON file, or - for stdin")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument(
        "--expect", help="comma-separated destinations; exit 1 unless exactly these are chosen"
    )


def _payload_commands(build: _Builder) -> None:
    p = build.command(
        build.sub,
        "sample",
        "print a sample payload of an IDWise event type, with a fresh eventId"
        " (no argument: list the types and their variants)",
        "sample",
    )
    p.add_argument("event", nargs="?", help="event type, e.g. 'Finished Journey'")
    overrides(p)
    p.add_argument(
        "--fixed-id",
        action="store_true",
        help="keep the sample's own eventId (a second send is a duplicate)",
    )
    p = build.command(
        build.sub,
        "send",
        "POST a payload to the running gateway of the config (its URL and credentials) and"
        " print the answer",
        "send",
    )
    p.add_argument("payload", nargs="?", help="payload JSON file, or - for stdin")
    p.add_argument("--sample", metavar="TYPE", help="send a fresh sample of this event type")
    overrides(p)
    p.add_argument("--url", help="webhook URL (default: the config's server host, port and path)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")


def _store_commands(build: _Builder) -> None:
    events = build.group("events", "stored events")
    p = build.command(events, "list", "list stored events", "events")
    listing(p)
    p.add_argument("--reference", help="reference number (referenceNo)")
    p.add_argument("--until", help="received until: duration ago (2h) or ISO time")
    p.add_argument("--text", help="text in the payload (case-insensitive; reads every payload)")
    p.add_argument("--before", type=int, help="only events with a row id below this (next page)")
    p = build.command(events, "show", "one event with its payload and deliveries", "events")
    p.add_argument("--json", action="store_true", help="JSON instead of the readable view")
    p.add_argument("id", help="row id, eventId or dedupe key")

    deliveries = build.group("deliveries", "deliveries and their attempts")
    p = build.command(deliveries, "list", "list deliveries", "deliveries")
    listing(p)
    p = build.command(deliveries, "show", "one delivery with its attempt history", "deliveries")
    p.add_argument("--json", action="store_true", help="JSON instead of the readable view")
    p.add_argument("id", type=int)

    p = build.command(
        build.sub, "replay", "re-queue deliveries (a running gateway picks them up)", "replay"
    )
    p.add_argument("--delivery", type=int, help="one delivery id")
    p.add_argument("--event-id", help="all deliveries of one event (row id, eventId or dedupe key)")
    p.add_argument(
        "--event", dest="event_id", action=Deprecated, instead="--event-id", help=argparse.SUPPRESS
    )
    p.add_argument("--dead", action="store_true", help="dead deliveries")
    p.add_argument("--destination", help="only to this destination")
    p.add_argument("--since", help="queued since (2h, or ISO time)")
    p.add_argument(
        "--reroute",
        action="store_true",
        help="re-evaluate stored events against the current rules; queue only new destinations",
    )
    p.add_argument("--json", action="store_true", help="what was queued, as JSON")

    store = build.group("store", "the store itself")
    p = build.command(
        store,
        "copy",
        "copy a SQLite store into PostgreSQL (events, deliveries, attempts; idempotent)",
        "store-copy",
    )
    p.add_argument("--from", dest="source", required=True, metavar="sqlite:PATH")
    p.add_argument(
        "--to",
        dest="target",
        metavar="postgres:DSN",
        help="default: the config's storage (keeps the password out of the process list)",
    )

"""Command line: each subcommand parses its flags, calls the library, prints, returns an
exit code. No logic of its own beyond presentation.

  parser.py           the argparse tree, exit codes, deprecated spellings
  output.py           Output (through the config's redactor), tables, times, CommandError
  config_commands.py  serve, check, route
  payloads.py         sample, send
  store_commands.py   events, deliveries, replay
  store_copy.py       store copy (SQLite -> PostgreSQL)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gateway.cli.config_commands import cmd_check, cmd_route, cmd_serve, load
from gateway.cli.output import CommandError, Output
from gateway.cli.parser import Handler
from gateway.cli.parser import build_parser as _build_parser
from gateway.cli.payloads import cmd_sample, cmd_send
from gateway.cli.store_commands import cmd_deliveries, cmd_events, cmd_replay, parse_since
from gateway.cli.store_copy import cmd_store_copy


def cmd_send_with_config(args: argparse.Namespace, out: Output) -> int:
    config = load(args, out)
    if config is None:
        return 1
    return cmd_send(args, out, config)


def cmd_completion(args: argparse.Namespace, out: Output) -> int:
    import shtab

    out.line(shtab.complete(build_parser(), shell=args.shell).rstrip("\n"))
    return 0


HANDLERS: dict[str, Handler] = {
    "serve": cmd_serve,
    "check": cmd_check,
    "route": cmd_route,
    "sample": cmd_sample,
    "send": cmd_send_with_config,
    "events": cmd_events,
    "deliveries": cmd_deliveries,
    "replay": cmd_replay,
    "store-copy": cmd_store_copy,
    "completion": cmd_completion,
}


def build_parser() -> argparse.ArgumentParser:
    return _build_parser(HANDLERS)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Output()
    try:
        code: int = args.func(args, out)
    except CommandError as exc:
        out.error(f"idwise-gateway: {exc}")
        return exc.code
    except argparse.ArgumentTypeError as exc:
        out.error(f"idwise-gateway: {exc}")
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    return code


__all__ = ["build_parser", "main", "parse_since"]

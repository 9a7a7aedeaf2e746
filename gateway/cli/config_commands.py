"""The commands about a config: `serve` runs it, `check` validates it, `route` dry-runs a
payload through its rules. Each prints and returns an exit code; the work is the library's."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from gateway.cli.output import Output
from gateway.cli.payloads import read_payload
from gateway.config.load import check_config, load_config, resolve_config_path
from gateway.config.model import Config
from gateway.errors import ConfigError, PayloadError, Problem
from gateway.events import Event, parse_event
from gateway.explain import explain_event
from gateway.rules import Routing


def load(args: argparse.Namespace, out: Output) -> Config | None:
    """The config of `-c` (or its default), its problems printed to stderr if it fails."""
    path = resolve_config_path(args.config)
    try:
        return load_config(path, redactor=out.redactor)
    except ConfigError as exc:
        for problem in exc.problems:
            out.error(str(problem))
        return None


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


# --------------------------------------------------------------------------------- check
def cmd_check(args: argparse.Namespace, out: Output) -> int:
    path = resolve_config_path(args.config)
    config, problems = check_config(path, redactor=out.redactor)
    problems = sorted(problems, key=lambda p: (p.file, p.line))
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity == "warning"]
    valid = not errors and config is not None
    failed = not valid or (args.strict and bool(warnings))
    if args.json:
        out.json(
            {
                "file": str(path),
                "valid": valid,
                "ok": not failed,
                "strict": args.strict,
                "errors": len(errors),
                "warnings": len(warnings),
                "rules": len(config.rules) if config else None,
                "destinations": len(config.destinations) if config else None,
                "problems": [_problem_json(p) for p in problems],
            }
        )
        return 1 if failed else 0
    for problem in problems:
        out.line(str(problem))
    counts = f"{len(errors)} error(s), {len(warnings)} warning(s)"
    if not valid:
        out.line(f"{path}: invalid: {counts}")
        return 1
    assert config is not None
    if failed:
        out.line(f"{path}: FAILED with --strict: {counts} (warnings fail with --strict)")
        return 1
    out.line(
        f"{path}: OK: {len(config.rules)} rule(s) from {len(config.files)} file(s), "
        f"{len(config.destinations)} destination(s), {len(warnings)} warning(s)"
    )
    return 0


def _problem_json(problem: Problem) -> dict[str, Any]:
    return {
        "file": problem.file,
        "line": problem.line,
        "path": problem.path,
        "severity": problem.severity,
        "message": problem.message,
    }


# --------------------------------------------------------------------------------- route
def cmd_route(args: argparse.Namespace, out: Output) -> int:
    config = load(args, out)
    if config is None:
        return 1
    try:
        event = parse_event(read_payload(args.payload))
    except PayloadError as exc:
        out.error(f"payload rejected ({exc.reason}): {exc}")
        return 1
    explained = explain_event(config, event)  # the console shows the same explanation
    routing, rendered = explained.routing, explained.rendered
    if args.json:
        out.json(route_json(event, routing, rendered))
    else:
        print_route(out, config, event, routing, rendered)
    if args.expect is not None:
        expected = {name.strip() for name in args.expect.split(",") if name.strip()}
        if expected != set(routing.destinations):
            out.error(
                f"expected destinations {sorted(expected)}, got {sorted(routing.destinations)}"
            )
            return 1
    return 0


def route_json(event: Event, routing: Routing, rendered: dict[str, Any]) -> dict[str, Any]:
    return {
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


def print_route(
    out: Output, config: Config, event: Event, routing: Routing, rendered: dict[str, Any]
) -> None:
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
        out.line(f"  no rule matched; unmatched -> {', '.join(config.unmatched) or '(nothing)'}")
    out.line(f"destinations: {', '.join(routing.destinations) or '(none)'}")
    for name, output in rendered.items():
        out.line(f"\n--- {name} ({output['type']}, chosen by {output.get('chosen_by', '?')})")
        out.json({k: v for k, v in output.items() if k not in ("type", "chosen_by")})

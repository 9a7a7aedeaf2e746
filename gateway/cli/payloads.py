"""Test payloads for people trying rules: `sample` (a realistic payload of each IDWise event
type, its documented variants, field overrides, a fresh eventId) and `send` (POST one to a
running gateway with the credentials of the config). The payload making is pure; `send`
does the one HTTP request."""

from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from gateway import idwise
from gateway.cli.output import CommandError, Output
from gateway.config.model import Config

_REFER = {
    "body.systemDecision": "Refer",
    "body.manualDecision": None,
    "body.finalDecision": "Refer",
}
_REJECTED = {
    "body.systemDecision": "Refer",
    "body.manualDecision": "Rejected",
    "body.finalDecision": "Rejected",
}
_APPROVED = {
    "body.systemDecision": "Refer",
    "body.manualDecision": "Approved",
    "body.finalDecision": "Approved",
}
_COMPLETE = {
    "body.systemDecision": "Complete",
    "body.manualDecision": None,
    "body.finalDecision": "Complete",
}
_INCOMPLETE = {
    "body.systemDecision": "Incomplete",
    "body.manualDecision": None,
    "body.finalDecision": "Incomplete",
}

#: event type -> variant -> the fields it sets (dotted paths). The first variant is what the
#: stored sample already is. Values follow IDWise's documented decisions: finalDecision is
#: manualDecision when a person reviewed the journey, else systemDecision.
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "Finished Journey": {
        "complete": {"body.systemDecision": "Complete"},
        "refer": {"body.systemDecision": "Refer"},
        "incomplete": {"body.systemDecision": "Incomplete"},
        "rejected": _REJECTED,
        "approved": _APPROVED,
    },
    "Updated Journey": {
        "complete": _COMPLETE,
        "refer": _REFER,
        "rejected": {**_REJECTED, "body.action": "Manual Review"},
        "approved": {**_APPROVED, "body.action": "Manual Review"},
        "aml-amend": {**_REFER, "body.action": "AML Amend"},
    },
    "Manually Reviewed": {"approved": _APPROVED, "rejected": _REJECTED},
    "Finished User Steps": {
        "incomplete": {"body.systemDecision": "Incomplete"},
        "complete": {"body.systemDecision": "Complete"},
        "refer": {"body.systemDecision": "Refer"},
    },
    "Verification Update Required": {
        "kyc-renewal": {"body.trigger": "KYC Renewal"},
        "manual-review": {**_REFER, "body.trigger": "Manual Review"},
    },
    "AML Monitor Update": {
        "refer": {"body.systemDecision": "Refer", "body.previousSystemDecision": "Complete"},
        "complete": {"body.systemDecision": "Complete", "body.previousSystemDecision": "Refer"},
    },
    "Finished Spot Check": {
        "complete": {"body.systemDecision": "Complete"},
        "refer": {"body.systemDecision": "Refer"},
    },
    "Finished Ongoing Check": {
        "refer": {"body.systemDecision": "Refer"},
        "complete": {"body.systemDecision": "Complete"},
    },
}


def parse_assignment(text: str) -> tuple[str, Any]:
    """`body.systemDecision=Refer` -> ("body.systemDecision", "Refer"); a value that parses
    as JSON takes its JSON type (`=2`, `=null`, `=true`, `=["a"]`), anything else is a
    string (quote it, `='"2"'`, for a string that looks like a number)."""
    path, sep, value = text.partition("=")
    if not sep or not path.strip():
        raise argparse.ArgumentTypeError(f"--set wants PATH=VALUE (got '{text}')")
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        parsed = value
    return path.strip(), parsed


def set_path(document: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path (`body.requiredSteps.0.reasonCode`), creating mappings on the way."""
    keys = path.split(".")
    target: Any = document
    for depth, key in enumerate(keys[:-1]):
        if isinstance(target, list) and key.isdigit() and int(key) < len(target):
            target = target[int(key)]
        elif isinstance(target, dict):
            target = target.setdefault(key, {})
        else:
            raise CommandError(f"--set {path}: {'.'.join(keys[: depth + 1])} is not a mapping")
    last = keys[-1]
    if isinstance(target, list) and last.isdigit() and int(last) < len(target):
        target[int(last)] = value
    elif isinstance(target, dict):
        target[last] = value
    else:
        raise CommandError(f"--set {path}: {'.'.join(keys[:-1])} is not a mapping")


def make_sample(
    event_type: str,
    *,
    variant: str | None = None,
    overrides: list[tuple[str, Any]] | None = None,
    fixed_id: bool = False,
) -> bytes:
    """The sample of `event_type` as bytes to POST: with `fixed_id` and nothing else, the
    stored sample byte for byte; otherwise a fresh `body.eventId` (so trying it twice is not
    a duplicate), the variant's fields, then the overrides."""
    if fixed_id and variant is None and not overrides:
        return idwise.sample_bytes(event_type)
    document = idwise.sample(event_type)
    if variant is not None:
        for path, value in variants_of(event_type)[variant].items():
            set_path(document, path, value)
    if not fixed_id:
        set_path(document, "body.eventId", str(uuid.uuid4()))
    for path, value in overrides or ():
        set_path(document, path, value)
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()


def variants_of(event_type: str) -> dict[str, dict[str, Any]]:
    return VARIANTS.get(event_type, {})


def _event_type(name: str) -> str:
    found = idwise.find_event_type(name)
    if found is None:
        raise CommandError(f"unknown event type '{name}'; one of: {', '.join(idwise.EVENT_TYPES)}")
    return found


def _check_variant(event_type: str, variant: str | None) -> None:
    known = variants_of(event_type)
    if variant is not None and variant not in known:
        listed = ", ".join(known) or "none"
        raise CommandError(f"'{event_type}' has no variant '{variant}' (variants: {listed})")


def cmd_sample(args: argparse.Namespace, out: Output) -> int:
    if not args.event:
        for event_type in idwise.EVENT_TYPES:
            variants = ", ".join(variants_of(event_type))
            out.line(f"{event_type}" + (f"  (--variant {variants})" if variants else ""))
        return 0
    event_type = _event_type(args.event)
    _check_variant(event_type, args.variant)
    payload = make_sample(
        event_type, variant=args.variant, overrides=args.set, fixed_id=args.fixed_id
    )
    sys.stdout.write(payload.decode())
    return 0


# ---------------------------------------------------------------------------------- send
def read_payload(name: str) -> bytes:
    """A payload file, or `-` for standard input; a missing file is a `CommandError`."""
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except FileNotFoundError:
        raise CommandError(f"no such payload file: {name}") from None
    except OSError as exc:
        raise CommandError(f"cannot read payload file {name}: {exc.strerror}") from None


def webhook_url(config: Config) -> str:
    """Where the gateway of `config` listens, as seen from this host."""
    host = config.server.host
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}{config.server.path}"


def credential_headers(config: Config) -> dict[str, str]:
    """The first credential the config accepts, as request headers (none if unauthenticated)."""
    auth = config.auth
    if auth.bearer:
        return {"Authorization": f"Bearer {auth.bearer[0].reveal()}"}
    if auth.basic:
        pair = f"{auth.basic[0].username.reveal()}:{auth.basic[0].password.reveal()}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    if auth.headers:
        return {auth.headers[0].name: auth.headers[0].value.reveal()}
    return {}


def post_webhook(
    url: str, payload: bytes, headers: dict[str, str], timeout: float
) -> tuple[int, str]:
    request = urllib.request.Request(
        url,
        data=payload,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "idwise-gateway send",
            **headers,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandError(f"cannot reach the gateway at {url}: {reason}") from None


def send_payload(args: argparse.Namespace) -> bytes:
    """The payload `send` posts: a sample (`--sample TYPE`, with its variant and overrides),
    else a file or `-` (standard input), with the overrides applied to it."""
    if args.sample:
        event_type = _event_type(args.sample)
        _check_variant(event_type, args.variant)
        return make_sample(event_type, variant=args.variant, overrides=args.set)
    if args.variant:
        raise CommandError("--variant needs --sample TYPE")
    if args.payload is None:
        raise CommandError("say what to send: a payload file, - for stdin, or --sample TYPE", 2)
    raw = read_payload(args.payload)
    if not args.set:
        return raw
    try:
        document = json.loads(raw)
    except ValueError:
        raise CommandError("--set needs a JSON payload; this one does not parse") from None
    if not isinstance(document, dict):
        raise CommandError("--set needs a JSON object payload")
    for path, value in args.set:
        set_path(document, path, value)
    return json.dumps(document, ensure_ascii=False).encode()


def cmd_send(args: argparse.Namespace, out: Output, config: Config) -> int:
    payload = send_payload(args)
    url = args.url or webhook_url(config)
    status, answer = post_webhook(url, payload, credential_headers(config), args.timeout)
    out.line(f"HTTP {status} {answer.strip()}")
    return 0 if 200 <= status < 300 else 1

"""Each destination as the console shows it: settings, target (masked), counts from the store
and a state. Pure.

State: *failing since T* when this process's attempts to it have all failed since T (the
first failure after its last success; attempts are not stored per destination, so this is
what this process saw); *retrying since T* when deliveries wait for a retry after a failed
attempt (from the store: another replica or an earlier run may have made it), T the oldest
of them; *healthy* otherwise.
The counts come from the store, so they are the same on every replica and survive restarts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.config.model import Config
from gateway.destinations.base import Destination, mask_url
from gateway.destinations.http import shown_url
from gateway.metrics import DestinationHealth
from gateway.secret import Redactor


def target(destination: Destination, redactor: Redactor) -> str:
    """Where it sends, with the secret parts hidden (a Slack URL's path is the credential)."""
    redact = redactor.redact
    kind = destination.type
    url = getattr(destination, "url", None)
    if kind == "http" and url is not None:
        # what `route` shows: scheme, host, port and path; credentials in it masked
        return f"{getattr(destination, 'method', 'POST')} {shown_url(url.reveal(), redactor)}"
    if kind == "slack" and url is not None:
        return mask_url(url.reveal())  # an incoming webhook's path is its credential
    if kind == "email":
        to = ", ".join(getattr(destination, "to", ()))
        host, port = getattr(destination, "host", "?"), getattr(destination, "port", "?")
        return redact(f"smtp {host}:{port} ({getattr(destination, 'security', '?')}) to {to}")
    if kind == "script":
        return redact(" ".join(getattr(destination, "command", ())))
    return kind


def rate(value: tuple[float, float] | None) -> str:
    if value is None:
        return "unlimited"
    count, per = value
    return f"{count:g}/{per:g}s"


def destination_rows(
    config: Config,
    stats: Iterable[Mapping[str, Any]],
    health: Mapping[str, DestinationHealth],
) -> list[dict[str, Any]]:
    by_name = {row["destination"]: row for row in stats}
    names = list(config.destinations) + sorted(set(by_name) - set(config.destinations))
    rows = []
    for name in names:
        counts = by_name.get(name, {})
        destination = config.destinations.get(name)
        retrying = int(counts.get("retrying") or 0)
        seen = health.get(name)
        state, since = "healthy", None
        if seen is not None and seen.failing_since is not None:
            state, since = "failing", seen.failing_since
        elif retrying:
            state, since = "retrying", counts.get("retrying_since")
        row: dict[str, Any] = {
            "name": name,
            "configured": destination is not None,
            "type": destination.type if destination else "(not configured)",
            "target": target(destination, config.redactor) if destination else "-",
            "pending": int(counts.get("pending") or 0),
            "oldest": counts.get("oldest"),
            "retrying": retrying,
            "dead": int(counts.get("dead") or 0),
            "last_error": counts.get("last_error"),
            "state": state,
            "since": since,
            "last_success": seen.last_success if seen else None,
        }
        if destination is not None:
            policy = destination.policy
            row.update(
                concurrency=policy.concurrency,
                rate=rate(policy.rate_limit),
                ordered=policy.ordered,
                max_attempts=policy.max_attempts,
            )
        rows.append(row)
    return rows

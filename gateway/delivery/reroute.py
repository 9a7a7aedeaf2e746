"""Re-routing stored events through the current rules: queue only the destinations an event
has not had yet. Does I/O (through the store); the routing itself is the pure `match_rules`."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.model import Config
from gateway.errors import PayloadError
from gateway.events import parse_event
from gateway.rules import match_rules
from gateway.store import Store


@dataclass(frozen=True, slots=True)
class Rerouted:
    events: int  # stored events re-evaluated
    queued: tuple[tuple[int, str], ...]  # (event row, destination) of each new delivery


Addition = tuple[int, str, str | None, str | None]  # (event row, destination, rule, journey)


def plan_reroute(
    config: Config,
    events: list[tuple[int, bytes]],
    existing: set[tuple[int, str]],
    destination: str | None = None,
) -> list[Addition]:
    """The deliveries a re-route would add, without adding them (the console shows them for
    confirmation first). Pure."""
    additions: list[Addition] = []
    for event_row, raw in events:
        try:
            parsed = parse_event(raw)
        except PayloadError:
            continue  # stored before a stricter parser; it cannot be routed again
        routes, _ = match_rules(config.rules, config.unmatched, parsed.type, parsed.document)
        for name, rule in routes:
            if destination and name != destination:
                continue
            if (event_row, name) not in existing:
                additions.append((event_row, name, rule, parsed.journey_key))
    return additions


async def reroute(
    store: Store,
    config: Config,
    *,
    event: str | None = None,
    since: float | None = None,
    destination: str | None = None,
) -> Rerouted:
    """Events chosen by `event` (id) or `since`; with `destination`, only that one."""
    events = await store.events_for_reroute(event=event, since=since)
    existing = await store.existing_routes([row for row, _ in events])
    additions = plan_reroute(config, events, existing, destination)
    await store.add_routes(additions)
    return Rerouted(len(events), tuple((row, name) for row, name, _, _ in additions))

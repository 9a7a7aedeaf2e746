"""A payload explained against a config: every rule, matched or not and why, the destinations
chosen, and what each would receive (secrets masked). Pure; nothing is sent.

`route` prints it and the console renders it (event detail, rules playground): one
explanation, so both always agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.config.model import Config
from gateway.events import Event
from gateway.rules import Routing, RuleOutcome, explain_rules, match_rules


@dataclass(frozen=True, slots=True)
class Explanation:
    event: Event
    routing: Routing
    #: destination -> {"type", "chosen_by", ...preview} or {"type", "error"}
    rendered: dict[str, dict[str, Any]]
    unmatched: tuple[str, ...]

    @property
    def outcomes(self) -> tuple[RuleOutcome, ...]:
        return self.routing.outcomes

    @property
    def destinations(self) -> tuple[str, ...]:
        return self.routing.destinations

    @property
    def matched_any(self) -> bool:
        return any(o.matched for o in self.routing.outcomes)


def explain_event(config: Config, event: Event) -> Explanation:
    routing = explain_rules(config.rules, config.unmatched, event.type, event.document)
    matched, _ = match_rules(config.rules, config.unmatched, event.type, event.document)
    assert tuple(d for d, _ in matched) == routing.destinations  # one truth for both
    return Explanation(event, routing, render_previews(config, event, routing), config.unmatched)


def render_previews(config: Config, event: Event, routing: Routing) -> dict[str, dict[str, Any]]:
    rendered: dict[str, dict[str, Any]] = {}
    for name in routing.destinations:
        destination = config.destinations.get(name)
        if destination is None:
            rendered[name] = {"type": "?", "error": "destination is not configured"}
            continue
        try:
            rendered[name] = {
                "type": destination.type,
                "chosen_by": routing.chosen_by[name],
                **destination.preview(event),
            }
        except Exception as exc:  # a template bug shows as a result, never a crash
            rendered[name] = {"type": destination.type, "error": f"rendering failed: {exc}"}
    return rendered

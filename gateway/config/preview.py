"""Each destination's templates against the events the rules route to it: warnings for
body fields those events never carry, and an error for a template that fails on a real
sample payload (gateway/samples). Pure, but runs destination code (`preview`) on the
samples, which is why it has a module of its own rather than living in `lint`.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway import idwise
from gateway.config.lint import check_fields
from gateway.config.report import Report, split_key
from gateway.config.source import Source
from gateway.destinations.base import Destination
from gateway.events import parse_event
from gateway.render import template_expressions
from gateway.rules import Rule


def routed_event_types(rules: list[Rule]) -> dict[str, set[str] | None]:
    """Destination name -> the event types its rules can send it (None: any type)."""
    receives: dict[str, set[str] | None] = {}
    for rule in rules:
        for name in rule.to:
            if rule.events is None:
                receives[name] = None
            elif receives.get(name, set()) is not None:
                receives.setdefault(name, set()).update(rule.events)  # type: ignore[union-attr]
    return receives


def check_templates(
    report: Report, main: Source, rules: list[Rule], destinations: Mapping[str, Destination]
) -> None:
    """Render each destination against the sample of every event type it can receive."""
    receives = routed_event_types(rules)
    for name, destination in destinations.items():
        types = receives.get(name, set()) if name in receives else set()
        event_types = (
            tuple(idwise.EVENT_TYPES)
            if types is None
            else tuple(t for t in sorted(types) if t in idwise.EVENT_FIELDS)
        )
        known = idwise.fields_of(event_types or None)
        written = main.data.get("destinations", {}).get(name, {})
        for key, template in destination.templates().items():
            if key.split(".")[0] not in written:
                continue  # built-in default templates are written for every event type
            check_fields(
                report,
                main,
                ("destinations", name, *split_key(key)),
                template_expressions(template),
                known,
                "the events routed here" if types else None,
            )
        for event_type in event_types or idwise.EVENT_TYPES:
            event = parse_event(idwise.sample_bytes(event_type))
            try:
                destination.preview(event)
            except Exception as exc:  # a template that fails on real data fails `check`
                report.error(
                    main,
                    ("destinations", name),
                    f"rendering the '{event_type}' sample fails: {exc}",
                )

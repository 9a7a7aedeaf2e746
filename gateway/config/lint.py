"""Cross-reference checks over a built config: names that must exist (rule and
`unmatched` -> destination) and warnings about event types and body fields. Pure.

Runs after every part is built, so a name is checked against everything defined in every
file; parts that already failed are skipped (the `Report` knows them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway import idwise
from gateway.config.build import RuleItem
from gateway.config.report import Report, nearest
from gateway.config.source import Path as KeyPath
from gateway.config.source import Source
from gateway.jmes import body_fields


def undefined(name: str, destinations: Mapping[str, Any]) -> str:
    hint = nearest(name, list(destinations))
    defined = ", ".join(sorted(destinations)) or "none"
    return f"destination '{name}' is not defined{hint} (defined: {defined})"


def check_unmatched(
    report: Report, main: Source, unmatched: tuple[str, ...], destinations: Mapping[str, Any]
) -> None:
    for i, name in enumerate(unmatched):
        if name not in destinations and name not in report.broken_destinations:
            report.error(main, ("unmatched", i), undefined(name, destinations))


def check_rules(report: Report, items: list[RuleItem], destinations: Mapping[str, Any]) -> None:
    """Each rule's destinations exist; its event types are IDWise's; its condition reads
    only fields those event types carry."""
    for source, path, item, rule in items:
        for j, name in enumerate(rule.to):
            if name not in destinations and name not in report.broken_destinations:
                to_path = (*path, "to", j) if isinstance(item["to"], list) else (*path, "to")
                report.error(source, to_path, undefined(name, destinations))
        if rule.events is not None:
            raw_events = item["events"] if isinstance(item["events"], list) else [item["events"]]
            for j, event_type in enumerate(raw_events):
                if event_type not in idwise.EVENT_FIELDS:
                    check_event_type(report, source, (*path, "events", j), event_type)
        known = idwise.fields_of(
            tuple(e for e in (rule.events or ()) if e in idwise.EVENT_FIELDS) or None
        )
        if rule.when_source:
            scope = "the event types of this rule" if rule.events else None
            check_fields(report, source, (*path, "when"), [rule.when_source], known, scope)


#: an unknown type this close to a known one (edits, ignoring case) is a typo, not a new type
NEAR_MISS = 2


def check_event_type(report: Report, source: Source, path: KeyPath, event_type: str) -> None:
    """A type one or two letters from a known one is an error (the rule would silently never
    match); one far from every known type stays a warning, since IDWise adds types."""
    close = [
        known
        for known in idwise.EVENT_TYPES
        if edit_distance(event_type.lower(), known.lower()) <= NEAR_MISS
    ]
    if close:
        report.error(
            source,
            path,
            f"'{event_type}' is not an IDWise event type: did you mean '{close[0]}'?"
            " (event types match exactly, so this rule would never match)",
        )
        return
    hint = nearest(event_type, list(idwise.EVENT_TYPES))
    report.warn(source, path, f"'{event_type}' is not a known IDWise event type{hint}")


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]


def check_fields(
    report: Report,
    source: Source,
    path: KeyPath,
    expressions: list[str],
    known: frozenset[str],
    scope: str | None,
) -> None:
    """Warn about each `body.<field>` read by `expressions` that is not in `known`."""
    for expression in expressions:
        for name in body_fields(expression):
            if name not in known:
                hint = nearest(name, sorted(known), prefix="body.")
                report.warn(
                    source,
                    path,
                    f"body.{name} is not carried by {scope or 'any IDWise event'}{hint}",
                )

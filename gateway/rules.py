"""Routing rules: which destinations an event goes to, and why. Pure; no I/O.

Fan-out semantics: every matching rule fires, in order, until a matching rule with
`stop: true`; a destination named by several matching rules gets the event once; when no
rule matched, `unmatched` (if any) receives it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jmespath.exceptions import JMESPathError

from gateway.jmes import Expression, compile_expression, search, split_top_level, truthy


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    to: tuple[str, ...]
    events: frozenset[str] | None = None
    when: Expression | None = None
    when_source: str | None = None
    description: str = ""
    stop: bool = False
    file: str = ""
    line: int = 0


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    rule: Rule
    matched: bool
    reason: str
    evaluated: bool = True  # False when an earlier `stop: true` rule ended evaluation


@dataclass(frozen=True, slots=True)
class Routing:
    destinations: tuple[str, ...]
    #: destination -> name of the first rule that chose it ("(unmatched)" for the fallback)
    chosen_by: dict[str, str]
    outcomes: tuple[RuleOutcome, ...]

    @property
    def matched_rules(self) -> tuple[str, ...]:
        return tuple(o.rule.name for o in self.outcomes if o.matched)


UNMATCHED = "(unmatched)"


class RuleSet(tuple[Rule, ...]):
    """The rules in order, indexed by event type, so an event is only tried against the rules
    that can match it (most rules filter on `events`)."""

    _by_type: dict[str, tuple[Rule, ...]]
    _untyped: tuple[Rule, ...]

    def __new__(cls, rules: Iterable[Rule] = ()) -> RuleSet:
        self = super().__new__(cls, tuple(rules))
        named = {name for rule in self if rule.events for name in rule.events}
        self._by_type = {
            name: tuple(r for r in self if r.events is None or name in r.events) for name in named
        }
        self._untyped = tuple(r for r in self if r.events is None)
        return self

    def for_type(self, event_type: str) -> tuple[Rule, ...]:
        return self._by_type.get(event_type, self._untyped)


Routes = tuple[tuple[str, str], ...]  # (destination, first rule that chose it)


def match_rules(
    rules: tuple[Rule, ...], unmatched: tuple[str, ...], event_type: str, document: Any
) -> tuple[Routes, tuple[str, ...]]:
    """The hot path: (destination, rule) pairs in first-chosen order, and the matched rules."""
    chosen: dict[str, str] = {}
    matched: list[str] = []
    # indexed (a loaded config's rules are a RuleSet already): every candidate accepts this
    # event type, only `when` is left to test
    indexed = rules if isinstance(rules, RuleSet) else RuleSet(rules)
    for rule in indexed.for_type(event_type):
        when = rule.when
        if when is None or when.holds(document):
            matched.append(rule.name)
            for name in rule.to:
                chosen.setdefault(name, rule.name)
            if rule.stop:
                break
    if not matched:
        return tuple((name, UNMATCHED) for name in unmatched), ()
    return tuple(chosen.items()), tuple(matched)


def explain_rules(
    rules: tuple[Rule, ...], unmatched: tuple[str, ...], event_type: str, document: Any
) -> Routing:
    """Same decision as `match_rules`, with a reason for every rule (for `route`)."""
    outcomes: list[RuleOutcome] = []
    chosen_by: dict[str, str] = {}
    stopped_by: str | None = None
    for rule in rules:
        if stopped_by is not None:
            outcomes.append(RuleOutcome(rule, False, f"not evaluated: '{stopped_by}' stops", False))
            continue
        matched, reason = _explain(rule, event_type, document)
        outcomes.append(RuleOutcome(rule, matched, reason))
        if matched:
            for name in rule.to:
                chosen_by.setdefault(name, rule.name)
            if rule.stop:
                stopped_by = rule.name
    if not any(o.matched for o in outcomes):
        chosen_by = dict.fromkeys(unmatched, UNMATCHED)
    return Routing(tuple(chosen_by), chosen_by, tuple(outcomes))


def _explain(rule: Rule, event_type: str, document: Any) -> tuple[bool, str]:
    if rule.events is not None and event_type not in rule.events:
        listed = ", ".join(sorted(rule.events))
        return False, f"event '{event_type}' is not in events [{listed}]"
    if rule.when is None:
        return True, "event type matches" if rule.events is not None else "no conditions"
    value = search(rule.when, document)
    if truthy(value):
        return True, f"when is true ({_show(value)})"
    operator, parts = split_top_level(rule.when_source or "")
    if len(parts) > 1:
        try:
            values = [(part, search(compile_expression(part), document)) for part in parts]
        except JMESPathError:  # a part that does not compile alone (odd precedence)
            return False, f"when `{rule.when_source}` is {_show(value)}"
        if operator == "and":
            values = [(part, v) for part, v in values if not truthy(v)]
            lead = "false part: "
        else:
            lead = "every alternative is false: "
        if values and not (operator == "or" and any(truthy(v) for _, v in values)):
            return False, lead + "; ".join(f"`{part}` is {_show(v)}" for part, v in values)
    return False, f"when `{rule.when_source}` is {_show(value)}"


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)

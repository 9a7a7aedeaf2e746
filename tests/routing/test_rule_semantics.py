"""Rule semantics with small configs: fan-out, stop, dedupe, unmatched, events, truthiness,
`route --json` explanations, and properties over arbitrary payloads."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import idwise
from gateway.config.load import load_config
from gateway.config.model import Config
from gateway.jmes import truthy
from gateway.rules import UNMATCHED, explain_rules, match_rules
from tests.support.config import ROOT, base_config, write_config
from tests.support.process import CliServer

NAMES = ("a", "b", "c", "d", "fallback")


def destinations(*names: str) -> dict[str, Any]:
    return {name: {"type": "http", "url": f"http://127.0.0.1:9/{name}"} for name in names}


def make(tmp_path: Path, rules: list[dict[str, Any]], **sections: Any) -> Config:
    config = base_config(tmp_path, destinations=destinations(*NAMES), rules=rules, **sections)
    return load_config(write_config(tmp_path, config), environ={})


def route(
    config: Config, body: dict[str, Any] | None = None, event: str = "Finished Journey", **top: Any
) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    document = {"event": event, "body": body if body is not None else {}, **top}
    routes, matched = match_rules(config.rules, config.unmatched, event, document)
    explained = explain_rules(config.rules, config.unmatched, event, document)
    assert explained.destinations == tuple(name for name, _ in routes)
    assert explained.matched_rules == matched
    assert explained.chosen_by == dict(routes)
    return routes, matched


def test_every_matching_rule_fires_in_order(tmp_path: Path) -> None:
    config = make(
        tmp_path,
        [
            {"name": "r1", "to": ["c", "a"]},
            {"name": "r2", "when": "body.x == `1`", "to": ["d"]},  # does not match
            {"name": "r3", "to": ["b"]},
        ],
    )
    routes, matched = route(config, {"x": 2})
    assert routes == (("c", "r1"), ("a", "r1"), ("b", "r3"))
    assert matched == ("r1", "r3")


def test_stop_ends_evaluation_only_when_its_rule_matches(tmp_path: Path) -> None:
    config = make(
        tmp_path,
        [
            {"name": "first", "to": ["a"]},
            {"name": "stopper", "when": "body.stop", "to": ["b"], "stop": True},
            {"name": "later", "to": ["c"]},
        ],
    )
    assert route(config, {"stop": True}) == (
        (("a", "first"), ("b", "stopper")),
        ("first", "stopper"),
    )
    assert route(config, {"stop": False})[1] == ("first", "later")


def test_stop_in_inline_rules_stops_rules_files(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "20-b.yaml").write_text("rules:\n  - {name: file-b, to: [b]}\n")
    (tmp_path / "rules" / "10-a.yaml").write_text(
        "rules:\n  - {name: file-a, to: [a], when: 'body.go', stop: true}\n"
    )
    config = make(tmp_path, [{"name": "inline", "to": ["c"]}], rules_files=["rules/*.yaml"])
    assert [r.name for r in config.rules] == ["inline", "file-a", "file-b"]
    assert route(config, {"go": True})[1] == ("inline", "file-a")
    assert route(config, {"go": False})[1] == ("inline", "file-b")


def test_a_destination_named_by_several_rules_gets_the_event_once(tmp_path: Path) -> None:
    config = make(
        tmp_path,
        [
            {"name": "r1", "to": ["a", "b"]},
            {"name": "r2", "to": ["b", "c", "a"]},
            {"name": "r3", "to": "b"},
        ],
    )
    routes, matched = route(config)
    assert routes == (("a", "r1"), ("b", "r1"), ("c", "r2"))
    assert matched == ("r1", "r2", "r3")


@pytest.mark.parametrize("unmatched", [["fallback", "d"], "fallback"])
def test_unmatched_receives_events_no_rule_matched(tmp_path: Path, unmatched: Any) -> None:
    config = make(
        tmp_path,
        [{"name": "only-refer", "when": "body.systemDecision == 'Refer'", "to": ["a"]}],
        unmatched=unmatched,
    )
    expected = tuple(
        (name, UNMATCHED) for name in ([unmatched] if isinstance(unmatched, str) else unmatched)
    )
    assert route(config, {"systemDecision": "Complete"}) == (expected, ())
    assert route(config, {"systemDecision": "Refer"}) == ((("a", "only-refer"),), ("only-refer",))


def test_without_unmatched_an_unmatched_event_goes_nowhere(tmp_path: Path) -> None:
    config = make(tmp_path, [{"name": "never", "when": "`false`", "to": ["a"]}])
    assert route(config) == ((), ())


def test_no_rules_at_all_means_unmatched(tmp_path: Path) -> None:
    config = make(tmp_path, [], unmatched=["fallback"])
    assert route(config) == ((("fallback", UNMATCHED),), ())


def test_events_filter(tmp_path: Path) -> None:
    config = make(
        tmp_path,
        [
            {"name": "journeys", "events": ["Finished Journey", "Updated Journey"], "to": ["a"]},
            {"name": "aml", "events": "AML Monitor Update", "to": ["b"]},
            {
                "name": "filtered-and-conditioned",
                "events": ["Updated Journey"],
                "when": "body.action == 'AML Amend'",
                "to": ["c"],
            },
        ],
        unmatched=["fallback"],
    )
    assert route(config, event="Finished Journey")[1] == ("journeys",)
    assert route(config, {"action": "AML Amend"}, event="Updated Journey")[1] == (
        "journeys",
        "filtered-and-conditioned",
    )
    assert route(config, {"action": "AML Amend"}, event="Finished Journey")[1] == ("journeys",)
    assert route(config, event="AML Monitor Update")[1] == ("aml",)
    assert route(config, event="Finished Step")[0] == (("fallback", UNMATCHED),)
    assert route(config, event="finished journey")[0] == (("fallback", UNMATCHED),)  # exact match


@pytest.mark.parametrize(
    ("value", "matches"),
    [
        (0, True),
        (0.0, True),
        (-1, True),
        (True, True),
        ("x", True),
        (" ", True),
        ("false", True),
        ([0], True),
        ([None], True),
        ({"a": None}, True),
        (None, False),
        (False, False),
        ("", False),
        ([], False),
        ({}, False),
    ],
)
def test_jmespath_truthiness(tmp_path: Path, value: Any, matches: bool) -> None:
    assert truthy(value) is matches
    config = make(tmp_path, [{"name": "t", "when": "body.v", "to": ["a"]}])
    assert route(config, {"v": value})[1] == (("t",) if matches else ())


def test_a_missing_field_is_false(tmp_path: Path) -> None:
    config = make(tmp_path, [{"name": "t", "when": "body.v", "to": ["a"]}])
    assert route(config, {})[1] == ()
    assert route(config, {"w": 1})[1] == ()


def test_when_reads_the_whole_payload(tmp_path: Path) -> None:
    config = make(
        tmp_path,
        [
            {"name": "by-event", "when": "event == 'Updated Journey'", "to": ["a"]},
            {"name": "by-top-level", "when": "apiVersion == '2026-01'", "to": ["b"]},
            {"name": "by-list", "when": "body.requiredSteps[?stepId == '0'] | [0]", "to": ["c"]},
        ],
    )
    body = {"requiredSteps": [{"stepId": "0"}]}
    assert route(config, body, event="Updated Journey", apiVersion="2026-01")[1] == (
        "by-event",
        "by-top-level",
        "by-list",
    )
    assert route(config, {"requiredSteps": [{"stepId": "1"}]})[1] == ()


def test_runtime_type_errors_are_false_not_crashes(tmp_path: Path) -> None:
    config = make(
        tmp_path,
        [
            {"name": "compare-strings", "when": "body.a < body.b", "to": ["a"]},
            {"name": "length-of-number", "when": "length(body.n) > `1`", "to": ["b"]},
            {"name": "sort-mixed", "when": "sort(body.mixed)", "to": ["c"]},
        ],
        unmatched=["fallback"],
    )
    body = {"a": "x", "b": 5, "n": 5, "mixed": [1, "a"]}  # str < int raises inside jmespath
    assert route(config, body)[0] == (("fallback", UNMATCHED),)


# ---------------------------------------------------------------- explanations (route)
EXPLAINED_RULES = [
    {"name": "always", "to": ["a"]},
    {"name": "by-type", "events": ["Updated Journey"], "to": ["a"]},
    {
        "name": "both",
        "when": "body.systemDecision == 'Refer' && body.referenceNo == 'ACC-1'",
        "to": ["b"],
    },
    {
        "name": "either",
        "when": "body.finalDecision == 'Rejected' || body.manualDecision == 'Rejected'",
        "to": ["c"],
    },
    {"name": "true-when", "when": "body.systemDecision", "to": ["c"]},
    {"name": "stopper", "when": "body.referenceNo == 'ACC-2'", "to": ["d"], "stop": True},
    {"name": "after-stop", "to": ["fallback"]},
]


def test_explain_rules_gives_a_reason_for_every_rule(tmp_path: Path) -> None:
    config = make(tmp_path, EXPLAINED_RULES)
    document = {
        "event": "Finished Journey",
        "body": {"systemDecision": "Refer", "referenceNo": "ACC-2", "manualDecision": None},
    }
    routing = explain_rules(config.rules, config.unmatched, "Finished Journey", document)
    reasons = {o.rule.name: (o.matched, o.evaluated, o.reason) for o in routing.outcomes}
    assert reasons["always"] == (True, True, "no conditions")
    assert reasons["by-type"] == (
        False,
        True,
        "event 'Finished Journey' is not in events [Updated Journey]",
    )
    assert reasons["both"] == (False, True, "false part: `body.referenceNo == 'ACC-1'` is false")
    assert reasons["either"] == (
        False,
        True,
        "every alternative is false: `body.finalDecision == 'Rejected'` is false; "
        "`body.manualDecision == 'Rejected'` is false",
    )
    assert reasons["true-when"] == (True, True, 'when is true ("Refer")')
    assert reasons["stopper"][:2] == (True, True)
    assert reasons["after-stop"] == (False, False, "not evaluated: 'stopper' stops")
    assert routing.destinations == ("a", "c", "d")


def test_explain_reports_event_type_match_and_a_plain_false_condition(tmp_path: Path) -> None:
    config = make(
        tmp_path,
        [
            {"name": "by-type", "events": ["Updated Journey"], "to": ["a"]},
            {"name": "plain", "when": "body.action == 'AML Amend'", "to": ["b"]},
            {"name": "grouped", "when": "(body.x || body.y) && body.z", "to": ["c"]},
        ],
    )
    document = {"event": "Updated Journey", "body": {"action": "Step Update", "y": 1}}
    routing = explain_rules(config.rules, config.unmatched, "Updated Journey", document)
    reasons = [o.reason for o in routing.outcomes]
    assert reasons[0] == "event type matches"
    assert reasons[1] == "when `body.action == 'AML Amend'` is false"
    assert reasons[2] == "false part: `body.z` is null"


@pytest.mark.parametrize(
    ("when", "body", "top"),
    [
        (
            "body.requiredSteps[].stepId | contains(@, '0') && body.trigger == 'KYC Renewal'",
            {"trigger": "KYC Renewal", "requiredSteps": [{"stepId": "0"}]},
            {},
        ),
        ("body.inner | x || y", {"inner": {"x": None, "y": None}}, {"x": 1, "y": 2}),
    ],
)
def test_explanation_respects_pipe_precedence(
    tmp_path: Path, when: str, body: dict[str, Any], top: dict[str, Any]
) -> None:
    config = make(tmp_path, [{"name": "piped", "when": when, "to": ["a"]}])
    document = {"event": "Verification Update Required", "body": body, **top}
    routing = explain_rules(config.rules, config.unmatched, document["event"], document)
    (outcome,) = routing.outcomes
    assert outcome.matched is False
    # whatever the wording, an explanation of a false condition must not show a truthy value
    # as the reason, nor name no part at all
    assert not outcome.reason.endswith(": ")
    assert "is 1" not in outcome.reason and "is 2" not in outcome.reason


@pytest.fixture(scope="module")
def explained_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("explain")
    return write_config(
        folder, base_config(folder, destinations=destinations(*NAMES), rules=EXPLAINED_RULES)
    )


def test_route_json_reports_each_rule_with_its_reason(
    cli: CliServer, explained_config: Path
) -> None:
    raw = json.dumps(
        {
            "event": "Finished Journey",
            "body": {
                "eventId": "e-42",
                "journeyId": "j-1",
                "systemDecision": "Refer",
                "referenceNo": "ACC-2",
            },
        }
    ).encode()
    result = cli.run("route", "-c", str(explained_config), "-", "--json", stdin=raw)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["event"] == "Finished Journey"
    assert report["eventId"] == "e-42"
    assert report["journey"] == "j-1"
    assert report["destinations"] == ["a", "c", "d"]
    rules = {r["name"]: r for r in report["rules"]}
    assert [r["name"] for r in report["rules"]] == [r["name"] for r in EXPLAINED_RULES]
    assert rules["both"]["matched"] is False
    assert rules["both"]["reason"] == "false part: `body.referenceNo == 'ACC-1'` is false"
    assert rules["either"]["reason"] == (
        "every alternative is false: `body.finalDecision == 'Rejected'` is false; "
        "`body.manualDecision == 'Rejected'` is false"
    )
    assert rules["stopper"]["matched"] is True and rules["stopper"]["stop"] is True
    assert rules["after-stop"]["evaluated"] is False
    assert all(r["line"] > 0 and r["file"].endswith("config.yaml") for r in report["rules"])
    assert set(report["rendered"]) == {"a", "c", "d"}
    assert report["rendered"]["c"]["chosen_by"] == "true-when"
    assert report["rendered"]["d"]["type"] == "http"


def test_route_text_output_marks_matches(cli: CliServer, explained_config: Path) -> None:
    result = cli.run(
        "route", "-c", str(explained_config), "-", stdin=idwise.sample_bytes("Finished Journey")
    )
    assert result.returncode == 0, result.stderr
    assert "  MATCH always" in result.stdout
    assert "    -   both" in result.stdout
    assert "false part: `body.systemDecision == 'Refer'` is false" in result.stdout
    assert "destinations: a, c, fallback" in result.stdout


@pytest.mark.slow
def test_sample_piped_into_route(explained_config: Path) -> None:
    python = shlex.quote(sys.executable)
    command = (
        f"{python} -m gateway sample finished_journey | "
        f"{python} -m gateway route -c {shlex.quote(str(explained_config))} - "
        "--expect a,c,fallback"
    )
    result = subprocess.run(
        command, shell=True, capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "event: Finished Journey" in result.stdout


@pytest.mark.parametrize("event_type", idwise.EVENT_TYPES)
def test_every_sample_command_output_is_routable(cli: CliServer, event_type: str) -> None:
    sample = cli.run("sample", event_type)
    assert sample.returncode == 0
    assert json.loads(sample.stdout)["event"] == event_type
    result = cli.run(
        "route", "-c", "config.example.yaml", "-", "--json", cwd=ROOT, stdin=sample.stdout.encode()
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["destinations"][0] == "audit-log"


# ------------------------------------------------------------------------- properties
TRICKY_RULES = [
    {"name": "cmp", "when": "body.a < body.b", "to": ["a"]},
    {"name": "len", "when": "length(body.x) > `2`", "to": ["b"]},
    {"name": "contains", "when": "contains(body.tags, 'eu')", "to": ["c"]},
    {"name": "filter", "when": "body.items[?n > `1`].n | [0]", "to": ["d"]},
    {"name": "num", "when": "to_number(body.s) >= `0`", "to": ["a"]},
    {"name": "starts", "when": "starts_with(body.referenceNo, 'ACC')", "to": ["b"]},
    {"name": "not", "when": "!body.flag", "to": ["c"]},
    {"name": "mixed", "when": "body.a && body.b || body.c && !body.d", "to": ["d"]},
    {"name": "maxby", "when": "max_by(body.items, &n).n", "to": ["a"]},
    {"name": "sort", "when": "sort(body.items)", "to": ["b"]},
    {"name": "zero", "when": "`0`", "events": ["Finished Step"], "to": ["c"]},
    {"name": "stop", "when": "body.stop == `true`", "to": ["d"], "stop": True},
    {"name": "after", "events": ["Updated Journey", "Nope"], "to": ["fallback"]},
]

FIELDS = ["a", "b", "c", "d", "x", "s", "n", "tags", "items", "flag", "stop", "referenceNo",
          "systemDecision", "manualDecision", "finalDecision", "action"]  # fmt: skip
LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.sampled_from(["Complete", "Incomplete", "Refer", "Approved", "Rejected", "ACC-1", "eu"]),
)
JSON = st.recursive(
    LEAF,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["n", "stepId"]) | st.text(max_size=4), children, max_size=4
        )
    ),
    max_leaves=12,
)
BODY = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), JSON, max_size=8)
EVENT = st.sampled_from(idwise.EVENT_TYPES) | st.text(min_size=1, max_size=12)
DOCUMENT = st.one_of(
    st.builds(lambda event, body: {"event": event, "body": body}, EVENT, BODY),
    JSON,  # not even an object: the functions must still not raise
)


@pytest.fixture(scope="module")
def rule_sets(tmp_path_factory: pytest.TempPathFactory) -> list[Config]:
    folder = tmp_path_factory.mktemp("tricky")
    tricky = load_config(
        write_config(
            folder,
            base_config(
                folder,
                destinations=destinations(*NAMES),
                rules=TRICKY_RULES,
                unmatched=["fallback"],
            ),
        ),
        environ={},
    )
    return [tricky, load_config(ROOT / "config.example.yaml", environ={})]


@settings(max_examples=300, deadline=None)
@given(event=EVENT, document=DOCUMENT)
def test_match_and_explain_never_raise_and_agree(
    rule_sets: list[Config], event: str, document: Any
) -> None:
    for config in rule_sets:
        routes, matched = match_rules(config.rules, config.unmatched, event, document)
        routing = explain_rules(config.rules, config.unmatched, event, document)
        assert routing.destinations == tuple(name for name, _ in routes)
        assert routing.matched_rules == matched
        assert routing.chosen_by == dict(routes)
        assert len(set(routing.destinations)) == len(routing.destinations)
        assert len(routing.outcomes) == len(config.rules)
        assert all(o.reason for o in routing.outcomes)
        if not matched:
            assert routing.destinations == config.unmatched

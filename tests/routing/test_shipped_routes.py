"""Table-driven routing of the SHIPPED example (config.example.yaml + rules/*.yaml).

Every row runs twice: through `idwise-gateway route -c config.example.yaml - --expect ...`
(exit 0 only when exactly those destinations are chosen) and in-process through
load_config + match_rules (and explain_rules, which must agree).

What the shipped rules say (rules/*.yaml, read by hand):
  audit-everything (config)   every event                                   -> audit-log
  rejected-or-referred        Finished Journey / Updated Journey / Manually Reviewed with
                              finalDecision or manualDecision Rejected, or systemDecision Refer
                                                                -> compliance-slack, compliance-mail
  aml-monitor-change          AML Monitor Update                -> compliance-slack, compliance-mail
  spot-check-failed           Finished Spot Check / Finished Ongoing Check, systemDecision not
                              Complete                          -> compliance-slack
  completed-to-activation     the same three journey types, finalDecision Complete or Approved,
                              or no finalDecision and systemDecision Complete -> account-activation
  resubmission-required       Verification Update Required      -> customer-notify
  kyc-renewal-missed          KYC Renewal Deadline Exceeded     -> customer-notify, compliance-mail
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pytest

from gateway import idwise
from gateway.config.load import load_config
from gateway.config.model import Config
from gateway.events import parse_event
from gateway.rules import explain_rules, match_rules
from tests.support.config import ROOT
from tests.support.payloads import DROP, payload
from tests.support.process import CliServer, run_cli

AUDIT = "audit-log"
SLACK = "compliance-slack"
MAIL = "compliance-mail"
ACTIVATE = "account-activation"
NOTIFY = "customer-notify"
COMPLIANCE = {SLACK, MAIL}


def sample_file(name: str) -> bytes:
    return resources.files("gateway").joinpath("samples", name).read_bytes()


@dataclass(frozen=True)
class Case:
    id: str
    payload: bytes
    expected: frozenset[str]
    xfail: str | None = None


def case(id: str, raw: bytes, *destinations: str | set[str], xfail: str | None = None) -> Case:
    names: set[str] = {AUDIT}
    for item in destinations:
        names |= {item} if isinstance(item, str) else item
    return Case(id, raw, frozenset(names), xfail)


SAMPLES = {
    "Finished Step": case("sample:Finished Step", idwise.sample_bytes("Finished Step")),
    "Finished User Steps": case(
        "sample:Finished User Steps", idwise.sample_bytes("Finished User Steps")
    ),
    "Finished Journey": case(
        "sample:Finished Journey", idwise.sample_bytes("Finished Journey"), ACTIVATE
    ),
    "Updated Journey": case(
        "sample:Updated Journey", idwise.sample_bytes("Updated Journey"), ACTIVATE
    ),
    # Refer, then approved on review: compliance hears of the Refer, the account is activated
    "Manually Reviewed": case(
        "sample:Manually Reviewed", idwise.sample_bytes("Manually Reviewed"), COMPLIANCE, ACTIVATE
    ),
    "Verification Update Required": case(
        "sample:Verification Update Required",
        idwise.sample_bytes("Verification Update Required"),
        NOTIFY,
    ),
    "KYC Renewal Deadline Exceeded": case(
        "sample:KYC Renewal Deadline Exceeded",
        idwise.sample_bytes("KYC Renewal Deadline Exceeded"),
        NOTIFY,
        MAIL,
    ),
    "AML Monitor Update": case(
        "sample:AML Monitor Update", idwise.sample_bytes("AML Monitor Update"), COMPLIANCE
    ),
    "Finished Spot Check": case(
        "sample:Finished Spot Check", idwise.sample_bytes("Finished Spot Check")
    ),
    "Step Submitted": case("sample:Step Submitted", idwise.sample_bytes("Step Submitted")),
    "Finished Ongoing Check": case(
        "sample:Finished Ongoing Check", idwise.sample_bytes("Finished Ongoing Check"), SLACK
    ),
}

EXTRA_SAMPLES = [
    case(
        "sample:legacy Finished Journey without eventId (Refer)",
        sample_file("legacy_finished_journey_no_event_id.json"),
        COMPLIANCE,
    ),
    case(
        "sample:Finished Journey with unknown fields",
        sample_file("edge_unknown_fields.json"),
        ACTIVATE,
    ),
]

DECISIONS = [
    # Finished Journey carries systemDecision (the final one)
    case("FJ system Complete", payload("Finished Journey", systemDecision="Complete"), ACTIVATE),
    case("FJ system Incomplete", payload("Finished Journey", systemDecision="Incomplete")),
    case("FJ system Refer", payload("Finished Journey", systemDecision="Refer"), COMPLIANCE),
    # a decision value IDWise adds later reaches compliance first, never activation
    case(
        "FJ unknown future decision",
        payload("Finished Journey", systemDecision="Escalated"),
        COMPLIANCE,
    ),
    # ... and possibly the manual and final decisions too
    *[
        case(
            f"FJ {system}/{manual}/{final}",
            payload(
                "Finished Journey",
                systemDecision=system,
                manualDecision=manual,
                finalDecision=final,
            ),
            *expected,
        )
        for system, manual, final, expected in [
            ("Complete", None, "Complete", [ACTIVATE]),
            ("Incomplete", None, "Incomplete", []),
            ("Refer", None, "Refer", [COMPLIANCE]),
            ("Refer", "Approved", "Approved", [COMPLIANCE, ACTIVATE]),
            ("Refer", "Rejected", "Rejected", [COMPLIANCE]),
            ("Complete", "Rejected", "Rejected", [COMPLIANCE]),
            ("Incomplete", "Approved", "Approved", [ACTIVATE]),
            ("Incomplete", "Rejected", "Rejected", [COMPLIANCE]),
        ]
    ],
    case(
        "FJ Complete, manually Rejected, no finalDecision",
        payload("Finished Journey", systemDecision="Complete", manualDecision="Rejected"),
        COMPLIANCE,
    ),
    case(
        "FJ finalDecision Rejected only",
        payload("Finished Journey", systemDecision=DROP, finalDecision="Rejected"),
        COMPLIANCE,
    ),
    # Manually Reviewed
    *[
        case(
            f"MR {system}/{manual}/{final}",
            payload(
                "Manually Reviewed",
                systemDecision=system,
                manualDecision=manual,
                finalDecision=final,
            ),
            *expected,
        )
        for system, manual, final, expected in [
            ("Refer", "Approved", "Approved", [COMPLIANCE, ACTIVATE]),
            ("Refer", "Rejected", "Rejected", [COMPLIANCE]),
            ("Complete", "Approved", "Approved", [ACTIVATE]),
            ("Incomplete", "Rejected", "Rejected", [COMPLIANCE]),
            ("Complete", None, "Complete", [ACTIVATE]),
        ]
    ],
    # Finished User Steps: the decision is not final yet, only the audit log hears of it
    *[
        case(f"FUS {system}", payload("Finished User Steps", systemDecision=system))
        for system in idwise.DECISIONS
    ],
    # spot checks: anything but Complete goes to compliance Slack
    case("FSC Complete", payload("Finished Spot Check", systemDecision="Complete")),
    case("FSC Incomplete", payload("Finished Spot Check", systemDecision="Incomplete"), SLACK),
    case("FSC Refer", payload("Finished Spot Check", systemDecision="Refer"), SLACK),
    case("FOC Complete", payload("Finished Ongoing Check", systemDecision="Complete")),
    case("FOC Incomplete", payload("Finished Ongoing Check", systemDecision="Incomplete"), SLACK),
    case("FSC without systemDecision", payload("Finished Spot Check", systemDecision=DROP), SLACK),
    # AML monitoring: every change reaches compliance, whichever direction
    *[
        case(
            f"AML {previous}->{system}",
            payload("AML Monitor Update", systemDecision=system, previousSystemDecision=previous),
            COMPLIANCE,
        )
        for previous, system in [
            ("Complete", "Refer"),
            ("Refer", "Complete"),
            ("Complete", "Incomplete"),
        ]
    ],
    # the customer must act
    case(
        "VUR manual review request",
        payload(
            "Verification Update Required",
            trigger="Manual Review",
            systemDecision="Refer",
            manualDecision=None,
            finalDecision="Refer",
        ),
        NOTIFY,
    ),
    # an event type IDWise may add later: stored, audited, nothing else
    case(
        "unknown event type",
        json.dumps(
            {"event": "Journey Archived", "body": {"eventId": "e-1", "journeyId": "j-1"}}
        ).encode(),
    ),
]

ACTIONS = [
    *[
        case(f"UJ {action} (Complete)", payload("Updated Journey", action=action), ACTIVATE)
        for action in (*idwise.UPDATED_JOURNEY_ACTIONS, "Document Expiry Recheck")
    ],
    case(
        "UJ AML Amend -> Refer",
        payload(
            "Updated Journey", action="AML Amend", systemDecision="Refer", finalDecision="Refer"
        ),
        COMPLIANCE,
    ),
    case(
        "UJ AML OGM Update -> Refer",
        payload(
            "Updated Journey",
            action="AML OGM Update",
            systemDecision="Refer",
            finalDecision="Refer",
        ),
        COMPLIANCE,
    ),
    case(
        "UJ Manual Review -> Rejected",
        payload(
            "Updated Journey",
            action="Manual Review",
            systemDecision="Refer",
            manualDecision="Rejected",
            finalDecision="Rejected",
        ),
        COMPLIANCE,
    ),
    case(
        "UJ Manual Review -> Approved",
        payload(
            "Updated Journey",
            action="Manual Review",
            systemDecision="Refer",
            manualDecision="Approved",
            finalDecision="Approved",
        ),
        COMPLIANCE,
        ACTIVATE,
    ),
    case(
        "UJ Step Update -> Incomplete",  # see the report: only the audit log hears of it
        payload(
            "Updated Journey",
            action="Step Update",
            systemDecision="Incomplete",
            finalDecision="Incomplete",
        ),
    ),
    case(
        "UJ unknown action -> Rejected",
        payload(
            "Updated Journey",
            action="Risk Rescore",
            manualDecision="Rejected",
            finalDecision="Rejected",
        ),
        COMPLIANCE,
    ),
    case(
        "UJ unknown action, no decisions",
        payload(
            "Updated Journey",
            action="Risk Rescore",
            systemDecision=DROP,
            manualDecision=DROP,
            finalDecision=DROP,
        ),
        # no decision at all is not a decision the rules know: compliance looks at it
        COMPLIANCE,
    ),
]

ALL = [*SAMPLES.values(), *EXTRA_SAMPLES, *DECISIONS, *ACTIONS]


def params(cases: list[Case]) -> list[Any]:
    return [
        pytest.param(
            c, id=c.id, marks=[pytest.mark.xfail(reason=c.xfail, strict=True)] if c.xfail else []
        )
        for c in cases
    ]


def test_the_table_covers_every_event_type_decision_and_action() -> None:
    assert set(SAMPLES) == set(idwise.EVENT_TYPES)
    documents = [json.loads(c.payload) for c in ALL]
    bodies = [d["body"] for d in documents]
    assert {b.get("systemDecision") for b in bodies} >= set(idwise.DECISIONS)
    assert {b.get("manualDecision") for b in bodies if "manualDecision" in b} >= set(
        idwise.MANUAL_DECISIONS
    )
    assert {b.get("finalDecision") for b in bodies} >= {
        "Complete",
        "Incomplete",
        "Refer",
        "Approved",
        "Rejected",
    }
    actions = {
        b.get("action")
        for d, b in zip(documents, bodies, strict=True)
        if d["event"] == "Updated Journey"
    }
    assert actions > set(idwise.UPDATED_JOURNEY_ACTIONS)  # plus an unknown future one


@pytest.fixture(scope="module")
def shipped() -> Config:
    return load_config(ROOT / "config.example.yaml", environ={})


@pytest.fixture(scope="module")
def routed(cli: CliServer) -> dict[str, subprocess.CompletedProcess[str]]:
    return {
        c.id: cli.run(
            "route",
            "-c",
            "config.example.yaml",
            "-",
            "--expect",
            ",".join(sorted(c.expected)),
            cwd=ROOT,
            stdin=c.payload,
        )
        for c in ALL
    }


@pytest.mark.parametrize("c", params(ALL))
def test_route_cli_expect(c: Case, routed: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = routed[c.id]
    assert result.returncode == 0, result.stderr + result.stdout
    chosen = result.stdout.split("destinations: ", 1)[1].splitlines()[0]
    assert set(chosen.split(", ")) == c.expected


@pytest.mark.parametrize("c", params(ALL))
def test_route_in_process(c: Case, shipped: Config) -> None:
    event = parse_event(c.payload)
    routes, matched = match_rules(shipped.rules, shipped.unmatched, event.type, event.document)
    assert {name for name, _ in routes} == c.expected
    routing = explain_rules(shipped.rules, shipped.unmatched, event.type, event.document)
    assert routing.destinations == tuple(name for name, _ in routes)
    assert routing.matched_rules == matched
    assert matched[0] == "audit-everything"


def test_destinations_come_in_rule_order_and_name_the_first_rule(shipped: Config) -> None:
    event = parse_event(idwise.sample_bytes("Manually Reviewed"))
    routes, matched = match_rules(shipped.rules, shipped.unmatched, event.type, event.document)
    assert routes == (
        (AUDIT, "audit-everything"),
        (SLACK, "rejected-or-referred"),
        (MAIL, "rejected-or-referred"),
        (ACTIVATE, "completed-to-activation"),
    )
    assert matched == ("audit-everything", "rejected-or-referred", "completed-to-activation")


def test_rules_files_load_after_inline_rules_in_sorted_order(shipped: Config) -> None:
    assert [(r.name, r.file.rsplit("/", 1)[-1]) for r in shipped.rules] == [
        ("audit-everything", "config.example.yaml"),
        ("rejected-or-referred", "10-compliance.yaml"),
        ("aml-monitor-change", "10-compliance.yaml"),
        ("spot-check-failed", "10-compliance.yaml"),
        ("completed-to-activation", "20-activation.yaml"),
        ("resubmission-required", "30-customer.yaml"),
        ("kyc-renewal-missed", "30-customer.yaml"),
    ]


@pytest.mark.parametrize(
    "expect",
    ["audit-log", "audit-log,account-activation,compliance-mail", "account-activation", ""],
)
def test_expect_fails_unless_exactly_those_destinations(cli: CliServer, expect: str) -> None:
    result = cli.run(
        "route",
        "-c",
        "config.example.yaml",
        "-",
        "--expect",
        expect,
        cwd=ROOT,
        stdin=idwise.sample_bytes("Finished Journey"),
    )
    assert result.returncode == 1
    assert "expected destinations" in result.stderr
    assert "got ['account-activation', 'audit-log']" in result.stderr


def test_expect_ignores_order_and_spaces(cli: CliServer) -> None:
    result = cli.run(
        "route",
        "-c",
        "config.example.yaml",
        "-",
        "--expect",
        " compliance-mail , audit-log,compliance-slack ",
        cwd=ROOT,
        stdin=idwise.sample_bytes("AML Monitor Update"),
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_route_from_a_file_and_from_a_cold_start(tmp_path: Any) -> None:
    path = tmp_path / "kyc.json"
    path.write_bytes(idwise.sample_bytes("KYC Renewal Deadline Exceeded"))
    result = run_cli(
        "route",
        "-c",
        "config.example.yaml",
        str(path),
        "--expect",
        "audit-log,customer-notify,compliance-mail",
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "MATCH kyc-renewal-missed" in result.stdout


def test_route_rejects_a_payload_that_is_not_an_event(cli: CliServer) -> None:
    result = cli.run(
        "route", "-c", "config.example.yaml", "-", cwd=ROOT, stdin=b'{"event": "X", "body": []}'
    )
    assert result.returncode == 1
    assert "payload rejected (missing_body)" in result.stderr

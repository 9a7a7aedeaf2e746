"""Warnings (unknown event types, fields no routed event carries) and templates rendered
against the samples during `check`."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.config.load import check_config, load_config
from gateway.errors import Problem
from tests.support.config import ROOT, base_config, write_config
from tests.support.process import CliServer, run_cli

DEST = {"a": {"type": "http", "url": "http://127.0.0.1:9/a"}}


def problems_for(tmp_path: Path, **sections: Any) -> list[Problem]:
    config = base_config(tmp_path, **{"destinations": DEST, **sections})
    _, problems = check_config(write_config(tmp_path, config), environ={})
    return problems


def only_warnings(problems: list[Problem]) -> list[Problem]:
    assert [p for p in problems if p.severity == "error"] == [], problems
    return [p for p in problems if p.severity == "warning"]


def test_event_type_far_from_every_known_one_is_a_warning(tmp_path: Path) -> None:
    """IDWise adds types: one that is nothing like a known type stays routable."""
    rules = [{"name": "r", "events": ["Finished Journey", "Document Expired"], "to": ["a"]}]
    (warning,) = only_warnings(problems_for(tmp_path, rules=rules))
    assert warning.path == "rules[0].events[1]"
    assert warning.message == "'Document Expired' is not a known IDWise event type"
    assert ": warning: " in str(warning)


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("Finished Jorney", "Finished Journey"),  # one letter
        ("AML Monitor Updates", "AML Monitor Update"),  # one letter too many
        ("Finshed Jurney", "Finished Journey"),  # two letters
        ("updated journey", "Updated Journey"),  # case only
    ],
)
def test_event_type_near_a_known_one_is_an_error(tmp_path: Path, written: str, meant: str) -> None:
    """A near miss would make the rule silently never match: an error naming the real type."""
    rules = [{"name": "r", "events": [written], "to": ["a"]}]
    (error,) = problems_for(tmp_path, rules=rules)
    assert (error.severity, error.path) == ("error", "rules[0].events[0]")
    assert f"did you mean '{meant}'?" in error.message


def test_misspelt_body_field_in_when_suggests_the_real_field(tmp_path: Path) -> None:
    rules = [
        {
            "name": "r",
            "events": ["Finished Journey"],
            "when": "body.finalDecison == 'Rejected'",
            "to": ["a"],
        }
    ]
    (warning,) = only_warnings(problems_for(tmp_path, rules=rules))
    assert warning.path == "rules[0].when"
    assert "body.finalDecison is not carried by" in warning.message
    assert "did you mean body.finalDecision?" in warning.message


def test_field_the_named_types_never_carry_is_a_warning(tmp_path: Path) -> None:
    rules = [
        {"name": "r", "events": ["Finished Step"], "when": "body.finalDecision", "to": ["a"]},
        {"name": "ok", "events": ["Updated Journey"], "when": "body.action", "to": ["a"]},
    ]
    (warning,) = only_warnings(problems_for(tmp_path, rules=rules))
    assert warning.path == "rules[0].when"
    assert "body.finalDecision is not carried by the event types of this rule" in warning.message


def test_fields_known_to_some_type_are_fine_without_an_events_filter(tmp_path: Path) -> None:
    rules = [
        {
            "name": "r",
            "when": "body.updatedAMLVersionNumber > `1` || body.spotCheckJourneyId || "
            "body.requiredSteps[0].stepId == '0'",
            "to": ["a"],
        }
    ]
    assert only_warnings(problems_for(tmp_path, rules=rules)) == []


def test_unknown_field_without_events_filter_warns_about_any_event(tmp_path: Path) -> None:
    rules = [{"name": "r", "when": "body.decision == 'Rejected'", "to": ["a"]}]
    (warning,) = only_warnings(problems_for(tmp_path, rules=rules))
    assert "body.decision is not carried by any IDWise event" in warning.message


def test_load_config_keeps_warnings_on_a_valid_config(tmp_path: Path) -> None:
    config = base_config(
        tmp_path,
        destinations=DEST,
        rules=[{"name": "r", "events": ["Finished Jrny"], "to": ["a"]}],
    )
    loaded = load_config(write_config(tmp_path, config), environ={})
    assert len(loaded.warnings) == 1 and "did you mean Finished Journey?" in loaded.warnings[0]


def test_template_reading_an_unknown_field_is_a_warning(tmp_path: Path) -> None:
    destinations = {
        "chat": {
            "type": "slack",
            "url": "https://hooks.slack.com/services/x",
            "text": "Decision {{ body.finalDecison }} for {{ body.referenceNo }}",
        }
    }
    rules = [{"name": "r", "events": ["Finished Journey"], "to": ["chat"]}]
    (warning,) = only_warnings(problems_for(tmp_path, destinations=destinations, rules=rules))
    assert warning.path == "destinations.chat.text"
    assert "body.finalDecison is not carried by the events routed here" in warning.message
    assert "did you mean body.finalDecision?" in warning.message


def test_template_that_fails_on_the_samples_fails_check(tmp_path: Path) -> None:
    # YAML turns 2024-01-01 into a date, which no JSON body can carry: rendering fails
    destinations = {
        "api": {
            "type": "http",
            "url": "http://127.0.0.1:9/x",
            "body": {"since": "2024-01-01", "ref": "{{ body.referenceNo }}"},
        }
    }
    path = tmp_path / "config.yaml"
    config = base_config(tmp_path, destinations=destinations, rules=[{"name": "r", "to": ["api"]}])
    path.write_text(
        write_config(tmp_path, config).read_text().replace("'2024-01-01'", "2024-01-01")
    )
    loaded, problems = check_config(path, environ={})
    assert loaded is None
    errors = [p for p in problems if p.severity == "error"]
    assert errors, problems
    assert {p.path for p in errors} == {"destinations.api"}
    assert all("sample fails" in p.message and "date" in p.message for p in errors)
    assert any("'Finished Journey' sample" in p.message for p in errors)


def test_templates_of_the_shipped_config_render_every_sample_cleanly() -> None:
    loaded, problems = check_config(ROOT / "config.example.yaml", environ={})
    assert loaded is not None
    assert problems == []


# ------------------------------------------------------------------ exit codes (CLI)
WARN_ONLY = {
    "rules": [
        {"name": "r", "events": ["Finished Jrny"], "to": ["a"]},
        {"name": "s", "events": ["Finished Journey"], "when": "body.finalDecison", "to": ["a"]},
    ]
}


@pytest.fixture(scope="module")
def results(
    cli: CliServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, subprocess.CompletedProcess[str]]:
    folder = tmp_path_factory.mktemp("warnings")
    write_config(folder, base_config(folder, destinations=DEST, **WARN_ONLY))
    jobs = {
        "check": ("check", "-c", "config.yaml"),
        "strict": ("check", "--strict", "-c", "config.yaml"),
        "shipped": ("check", "-c", "config.example.yaml"),
        "shipped-strict": ("check", "-c", "config.example.yaml", "--strict"),
    }
    found = {
        key: cli.run(*args, cwd=ROOT if "shipped" in key else folder)
        for key, args in jobs.items()
        if key != "shipped"
    }
    found["shipped"] = run_cli(*jobs["shipped"], cwd=ROOT)  # one cold console start
    return found


def test_warnings_alone_leave_check_at_exit_0(
    results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    result = results["check"]
    assert result.returncode == 0, result.stdout
    assert "config.yaml:" in result.stdout and ": warning: " in result.stdout
    assert "did you mean Finished Journey?" in result.stdout
    assert "did you mean body.finalDecision?" in result.stdout
    assert "OK:" in result.stdout and "2 warning(s)" in result.stdout


def test_strict_makes_warnings_fail(results: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = results["strict"]
    assert result.returncode == 1
    assert ": warning: " in result.stdout
    # and says so, instead of printing OK and exiting 1
    assert "OK" not in result.stdout
    assert "FAILED with --strict: 0 error(s), 2 warning(s)" in result.stdout.splitlines()[-1]


@pytest.mark.parametrize("key", ["shipped", "shipped-strict"])
def test_shipped_example_passes_check(
    results: dict[str, subprocess.CompletedProcess[str]], key: str
) -> None:
    result = results[key]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "config.example.yaml: OK: 7 rule(s) from 4 file(s), 5 destination(s), 0 warning(s)" in (
        result.stdout
    )

"""Every rejected config case lives in tests/config/invalid/ as one small YAML file whose
header says where the problem must be reported:

    # expect: LINE: key.path: text the message must contain

A file may carry several `expect` lines (all problems are reported at once). The errors
reported must sit at exactly the expected (line, key path) places, both in-process
(`check_config`) and through `idwise-gateway check -c FILE` (exit 1, `FILE:LINE: path: msg`).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.config.load import check_config, load_config
from gateway.errors import ConfigError, Problem
from tests.support.process import CliServer, run_cli

HERE = Path(__file__).resolve().parent
INVALID = HERE / "invalid"
EXPECT = re.compile(r"^# expect: (\d+): (\S+?):(?: (.*))?$")

#: variables the invalid cases rely on being unset
ENVIRON = {k: v for k, v in os.environ.items() if not k.startswith("IDWG_TEST_")}


@dataclass(frozen=True)
class Expectation:
    line: int
    path: str  # "" for the whole file (printed as <root>)
    text: str

    @property
    def printed_path(self) -> str:
        return self.path or "<root>"


def expectations(path: Path) -> list[Expectation]:
    found = []
    for line in path.read_text().splitlines():
        match = EXPECT.match(line)
        if match:
            key = "" if match.group(2) == "<root>" else match.group(2)
            found.append(Expectation(int(match.group(1)), key, (match.group(3) or "").strip()))
    return found


CASES = sorted(INVALID.glob("*.yaml"))


def errors_of(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def test_there_are_enough_cases_and_each_declares_its_expectation() -> None:
    assert len(CASES) >= 20
    for case in CASES:
        assert expectations(case), f"{case.name} has no '# expect: LINE: path: message' header"


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_check_config_reports_the_exact_line_and_key_path(case: Path) -> None:
    expected = expectations(case)
    config, problems = check_config(case, environ=ENVIRON)
    errors = errors_of(problems)
    assert config is None, f"{case.name} was accepted"
    shown = "\n".join(map(str, errors))
    for item in expected:
        hits = [p for p in errors if p.line == item.line and p.path == item.path]
        assert hits, f"no error at line {item.line}, {item.printed_path}; got:\n{shown}"
        assert any(item.text in p.message for p in hits), (
            f"message at {item.line} {item.printed_path} lacks {item.text!r}; got:\n{shown}"
        )
        assert all(p.file == str(case) for p in hits)
    # nothing reported anywhere else (a cascade at the same key is tolerated here; see below)
    assert {(p.line, p.path) for p in errors} == {(e.line, e.path) for e in expected}, shown


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_load_config_raises_with_every_problem(case: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(case, environ=ENVIRON)
    reported = {(p.line, p.path) for p in caught.value.problems if p.severity == "error"}
    assert {(e.line, e.path) for e in expectations(case)} <= reported


@pytest.fixture(scope="module")
def cli_results(cli: CliServer) -> dict[str, subprocess.CompletedProcess[str]]:
    """`idwise-gateway check -c NAME` for every case (see tests.support.process.CliServer: one process per run)."""
    return {case.name: cli.run("check", "-c", case.name, cwd=INVALID) for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_cli_check_exits_1_and_prints_file_line_path_message(
    case: Path, cli_results: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = cli_results[case.name]
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    for item in expectations(case):
        prefix = f"{case.name}:{item.line}: {item.printed_path}: "
        hits = [line for line in lines if line.startswith(prefix)]
        assert hits, f"no line starting with {prefix!r} in:\n{result.stdout}"
        assert any(item.text in line[len(prefix) :] for line in hits), result.stdout
    assert f"{case.name}: invalid:" in result.stdout


# ---------------------------------------------------------------- all problems at once
def test_three_independent_errors_yield_three_problems() -> None:
    case = INVALID / "three_independent_errors.yaml"
    _, problems = check_config(case, environ=ENVIRON)
    errors = errors_of(problems)
    assert len(errors) == 3, "\n".join(map(str, errors))
    assert [p.line for p in sorted(errors, key=lambda p: p.line)] == [6, 11, 12]


def test_cli_prints_all_three_problems_and_counts_them(
    cli_results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    result = cli_results["three_independent_errors.yaml"]
    problem_lines = [
        line for line in result.stdout.splitlines() if line.startswith("three_independent_errors")
    ]
    assert len(problem_lines) == 4  # three problems and the summary
    assert "invalid: 3 error(s)" in result.stdout


def test_schema_errors_do_not_hide_the_other_problems(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "server:\n"
        "  port: 99999\n"  # schema: must be at most 65535
        "auth:\n"
        "  bearer: [tok-mixed]\n"
        "  allow_ips: [not-an-address]\n"  # model: CIDR
        "destinations:\n"
        "  audit: {type: script, command: [/bin/true]}\n"
        "rules:\n"
        "  - {name: r, to: [audit], when: 'body.(('}\n"  # model: JMESPath
    )
    _, problems = check_config(config, environ=ENVIRON)
    assert {(p.line, p.path) for p in errors_of(problems)} == {
        (2, "server.port"),
        (5, "auth.allow_ips[0]"),
        (9, "rules[0].when"),
    }


# ------------------------------------------------------------ quality of the messages
def test_unset_variable_is_reported_once_not_followed_by_a_cascade() -> None:
    _, problems = check_config(INVALID / "unset_env_var.yaml", environ=ENVIRON)
    assert [p.message for p in errors_of(problems)] == [
        "environment variable IDWG_TEST_NEVER_SET_URL is not set; "
        "set it, or write ${IDWG_TEST_NEVER_SET_URL:-default}"
    ]


def test_cli_names_the_refused_credential_header(
    cli_results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    """Header names are not secrets, so the message may (and must) name the header."""
    result = cli_results["credential_header_authorization.yaml"]
    assert "'Authorization' cannot carry a custom credential" in result.stdout


def test_every_problem_prints_on_one_line(
    cli_results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    result = cli_results["invalid_template.yaml"]
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout  # the problem and the summary
    assert all(line.startswith("invalid_template.yaml") for line in lines)


def test_unclosed_flow_mapping_names_the_line_it_opened() -> None:
    _, problems = check_config(INVALID / "yaml_unclosed_flow_mapping.yaml", environ=ENVIRON)
    (problem,) = problems
    assert problem.line == 6 or "line 6" in problem.message


def test_unknown_key_suggestion_lists_the_allowed_keys() -> None:
    _, problems = check_config(INVALID / "typo_nested_key.yaml", environ=ENVIRON)
    typo = next(p for p in problems if p.path == "destinations.risk.urll")
    assert "did you mean url?" in typo.message
    assert "allowed here:" in typo.message and "sign" in typo.message


@pytest.mark.slow
@pytest.mark.parametrize("name", ["typo_nested_key.yaml", "yaml_syntax_error.yaml"])
def test_console_script_from_a_cold_start(name: str) -> None:
    """The same through `python -m gateway` started from scratch (not the fork server)."""
    result = run_cli("check", "-c", str(INVALID / name))
    assert result.returncode == 1
    for item in expectations(INVALID / name):
        assert f"{INVALID / name}:{item.line}: {item.printed_path}: {item.text}" in result.stdout


@pytest.mark.slow
def test_a_missing_config_file_is_one_problem_not_a_crash(tmp_path: Path) -> None:
    result = run_cli("check", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert f"{tmp_path / 'nope.yaml'}:0: <root>: file not found" in result.stdout
    assert "Traceback" not in result.stderr


def test_a_config_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- just\n- a list\n")
    _, problems = check_config(path, environ=ENVIRON)
    assert [(p.line, p.path) for p in problems] == [(1, "")]
    assert "mapping" in problems[0].message


def test_problems_in_rules_files_name_that_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    rules_file = tmp_path / "rules" / "10-team.yaml"
    rules_file.write_text(
        "# team rules\n"
        "rules:\n"
        "  - name: audit\n"  # line 3: same name as the inline rule
        "    to: [audit]\n"
        "  - name: escalate\n"
        "    to: [audit, pagr]\n"  # line 6: undefined destination
        "    wehn: body.x\n"  # line 7: unknown key
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        "auth: {bearer: [tok-rules-files]}\n"
        "destinations:\n"
        "  audit: {type: script, command: [/bin/true]}\n"
        "  pager: {type: script, command: [/bin/true]}\n"
        "rules_files: [rules/*.yaml]\n"
        "rules:\n"
        "  - {name: audit, to: [audit]}\n"
    )
    _, problems = check_config(config, environ=ENVIRON)
    # an unknown key no longer hides the other problems of its rule: all in one run
    assert sorted((p.file, p.line, p.path) for p in problems) == [
        (str(rules_file), 3, "rules[0].name"),
        (str(rules_file), 6, "rules[1].to[1]"),
        (str(rules_file), 7, "rules[1].wehn"),
    ]
    rules_file.write_text(rules_file.read_text().replace("    wehn: body.x\n", ""))
    _, problems = check_config(config, environ=ENVIRON)
    found = sorted((p.line, p.path, p.message) for p in problems)
    assert [(line, path) for line, path, _ in found] == [
        (3, "rules[0].name"),
        (6, "rules[1].to[1]"),
    ]
    assert all(p.file == str(rules_file) for p in problems)
    assert f"duplicate rule name 'audit' (first at {config}:7)" in found[0][2]
    assert "did you mean pager?" in found[1][2]

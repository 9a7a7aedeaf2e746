"""The command line itself, run as real processes (tests.support.process.CliServer): where `-c` may
go, the deprecated spellings, one-line errors, `--json`, help, completion and `sample`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway import idwise
from tests.support.config import base_config, write_config
from tests.support.process import CliServer, run_cli


@pytest.fixture
def config(tmp_path: Path) -> Path:
    document = base_config(
        tmp_path,
        destinations={"a": {"type": "http", "url": "http://127.0.0.1:9/a"}},
        rules=[{"name": "all", "to": ["a"]}],
    )
    return write_config(tmp_path, document)


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_flag_before_or_after_the_subcommand(
    cli: CliServer, config: Path, where: str
) -> None:
    args = ["-c", str(config), "check"] if where == "before" else ["check", "-c", str(config)]
    result = cli.run(*args, cwd=config.parent.parent)  # ./config.yaml is not there
    assert result.returncode == 0, result.stderr
    assert f"{config}: OK" in result.stdout


def test_config_flag_after_a_group_and_its_action(cli: CliServer, config: Path) -> None:
    for args in (["events", "-c", str(config), "list"], ["-c", str(config), "events", "list"]):
        result = cli.run(*args)
        assert "no database at" in result.stderr  # it read that config's storage path


def test_old_spellings_work_with_a_one_line_note(cli: CliServer, config: Path) -> None:
    listed = cli.run("deliveries", "list", "-c", str(config), "--event", "Finished Journey")
    assert listed.stderr.splitlines()[0] == (
        "idwise-gateway: note: --event is deprecated here; use --type"
    )
    replayed = cli.run("replay", "-c", str(config), "--event", "e-1")
    assert replayed.stderr.splitlines()[0] == (
        "idwise-gateway: note: --event is deprecated here; use --event-id"
    )
    current = cli.run("replay", "-c", str(config), "--event-id", "e-1")
    assert "deprecated" not in current.stderr


@pytest.mark.parametrize("command", ["route", "send"])
def test_a_missing_payload_file_is_one_line(cli: CliServer, config: Path, command: str) -> None:
    result = cli.run(command, "-c", str(config), "no-such-payload.json")
    assert result.returncode == 1
    assert result.stderr == "idwise-gateway: no such payload file: no-such-payload.json\n"


def test_check_json(cli: CliServer, tmp_path: Path) -> None:
    document = base_config(
        tmp_path,
        destinations={"a": {"type": "http", "url": "http://127.0.0.1:9/a"}},
        rules=[
            {"name": "far", "events": ["Document Expired"], "to": ["a"]},
            {"name": "near", "events": ["Finished Jorney"], "to": ["b"]},
        ],
    )
    path = write_config(tmp_path, document)
    result = cli.run("check", "-c", str(path), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert (report["valid"], report["ok"], report["errors"], report["warnings"]) == (
        False,
        False,
        2,
        1,
    )
    assert {p["path"] for p in report["problems"]} == {
        "rules[0].events[0]",
        "rules[1].events[0]",
        "rules[1].to[0]",
    }
    assert all(
        set(p) == {"file", "line", "path", "severity", "message"} for p in report["problems"]
    )
    del document["rules"][1]
    write_config(tmp_path, document)
    strict = json.loads(cli.run("check", "-c", str(path), "--json", "--strict").stdout)
    assert (strict["valid"], strict["ok"], strict["warnings"]) == (True, False, 1)


def test_help_lists_exit_codes_and_version() -> None:
    helped = run_cli("--help")  # the console entry from a cold start
    assert "exit codes:" in helped.stdout and "130" in helped.stdout
    sub = run_cli("replay", "--help")
    assert "exit codes:" in sub.stdout
    assert "--event-id" in sub.stdout and "--event " not in sub.stdout  # the old one hidden
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("idwise-gateway ")


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_script_names_every_command(cli: CliServer, shell: str) -> None:
    result = cli.run("completion", shell)
    assert result.returncode == 0, result.stderr
    for command in ("serve", "check", "route", "sample", "send", "events", "replay"):
        assert command in result.stdout
    assert "--event-id" in result.stdout


def test_bash_completion_completes_a_subcommand(cli: CliServer, tmp_path: Path) -> None:
    """The generated script, loaded into a real bash, completes `idwise-gateway rep`."""
    import shutil
    import subprocess

    if shutil.which("bash") is None:
        pytest.skip("no bash")
    script = tmp_path / "completion.bash"
    script.write_text(cli.run("completion", "bash").stdout)
    probe = (
        f"source {script}\n"
        "COMP_WORDS=(idwise-gateway rep); COMP_CWORD=1; COMP_LINE='idwise-gateway rep';"
        " COMP_POINT=${#COMP_LINE}\n"
        "_shtab_idwise_gateway idwise-gateway rep idwise-gateway\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", probe], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.stdout.split() == ["replay"], done.stderr


# ---------------------------------------------------------------------------------- sample
def test_sample_gives_a_fresh_event_id_each_time(cli: CliServer) -> None:
    first = json.loads(cli.run("sample", "Finished Journey").stdout)
    second = json.loads(cli.run("sample", "Finished Journey").stdout)
    assert first["body"]["eventId"] != second["body"]["eventId"]
    assert {**first["body"], "eventId": None} == {**second["body"], "eventId": None}
    fixed = cli.run("sample", "Finished Journey", "--fixed-id")
    assert fixed.stdout.encode() == idwise.sample_bytes("Finished Journey")


def test_sample_variants_and_overrides(cli: CliServer) -> None:
    rejected = json.loads(cli.run("sample", "finished journey", "--variant", "rejected").stdout)
    assert (rejected["body"]["manualDecision"], rejected["body"]["finalDecision"]) == (
        "Rejected",
        "Rejected",
    )
    result = cli.run(
        "sample",
        "AML Monitor Update",
        "--set",
        "body.updatedAMLVersionNumber=7",
        "--set",
        "body.systemDecision=Complete",
        "--set",
        "body.note=null",
        "--set",
        'body.label="7"',
        "--set",
        "extra.region=EU",
    )
    document = json.loads(result.stdout)
    assert document["body"]["updatedAMLVersionNumber"] == 7
    assert document["body"]["systemDecision"] == "Complete"
    assert document["body"]["note"] is None
    assert document["body"]["label"] == "7"
    assert document["extra"] == {"region": "EU"}


def test_every_documented_variant_is_listed_and_prints(cli: CliServer) -> None:
    from gateway.cli.payloads import VARIANTS

    listed = cli.run("sample").stdout
    for event_type, variants in VARIANTS.items():
        assert f"{event_type}  (--variant {', '.join(variants)})" in listed
        for variant in variants:
            printed = cli.run("sample", event_type, "--variant", variant)
            assert json.loads(printed.stdout)["event"] == event_type, printed.stderr
    wrong = cli.run("sample", "Finished Journey", "--variant", "nope")
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("idwise-gateway: 'Finished Journey' has no variant 'nope'")


def test_table_cells_cannot_break_lines_or_drive_the_terminal() -> None:
    import contextlib
    import io

    from gateway.cli.output import Output

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        Output().table([{"a": "x\ny\x1b[2J", "b": None}], [("a", "A"), ("b", "B")])
    assert buffer.getvalue().splitlines()[1] == "x\\ny\\x1b[2J  -"


def test_route_shows_where_an_http_request_goes_and_masks_its_credentials(
    cli: CliServer, tmp_path: Path
) -> None:
    """Through the CLI's own redactor too: the whole URL is a registered secret, which must
    not turn the carefully masked URL back into ****."""
    document = base_config(
        tmp_path,
        destinations={
            "literal": {"type": "http", "url": "http://risk:8000/idwise?key=q-secret-7781"},
            "from-env": {"type": "http", "url": "${IDWG_RISK_URL}"},
        },
        rules=[{"name": "all", "to": ["literal", "from-env"]}],
    )
    path = write_config(tmp_path, document)
    env = {"IDWG_RISK_URL": "https://user:pw-secret-5512@risk.internal/v2/hook"}
    payload = idwise.sample_bytes("Finished Step")
    text = cli.run("route", "-c", str(path), "-", stdin=payload, env=env)
    as_json = cli.run("route", "-c", str(path), "-", "--json", stdin=payload, env=env)
    for result in (text, as_json):
        assert result.returncode == 0, result.stderr
        assert '"url": "http://risk:8000/idwise?key=****"' in result.stdout
        assert '"url": "https://****@risk.internal/v2/hook"' in result.stdout
        assert "q-secret-7781" not in result.stdout and "pw-secret-5512" not in result.stdout

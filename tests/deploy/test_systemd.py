"""deploy/systemd/idwise-gateway.service: the unit systemd itself accepts, and that keeps
what docs/deploy.md promises (a user of its own, a state directory, reload = SIGHUP)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.config import ROOT

UNIT = ROOT / "deploy" / "systemd" / "idwise-gateway.service"


def settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_the_unit_runs_the_gateway_as_its_own_user_with_a_state_directory() -> None:
    unit = settings()
    assert unit["DynamicUser"] == ["yes"] or unit.get("User")
    assert unit["StateDirectory"] == ["idwise-gateway"]
    assert unit["WorkingDirectory"] == ["/var/lib/idwise-gateway"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["ExecStart"][0].endswith("idwise-gateway serve")
    assert unit["ExecStartPre"][0].endswith("idwise-gateway check")
    assert unit["KillMode"] == ["mixed"]  # SIGTERM to the gateway: it drains, then exits 0
    assert "/var/lib/idwise-gateway/gateway.db" in (ROOT / "deploy" / "config.yaml").read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` reads it like systemd would: an unknown key, a bad value or a
    missing program is reported (on stderr, exit status 0 for mere warnings)."""
    program = Path(sys.executable).parent / "idwise-gateway"
    unit = tmp_path / UNIT.name
    unit.write_text(
        UNIT.read_text().replace("/opt/idwise-gateway/bin/idwise-gateway", str(program))
    )
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr

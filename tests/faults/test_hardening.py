"""Issue 13 (hardening) against real `idwise-gateway serve` processes over raw sockets:
multi-line headers, two gateways on one database, idle and slow connections, the connection
cap and malformed requests. The in-process cases are in tests/test_hardening.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import base_config, write_config
from tests.support.payloads import payload
from tests.support.process import GatewayProcess
from tests.support.raw_http import exchange, request_bytes
from tests.support.store import stored_keys

pytestmark = pytest.mark.slow


def _gateway(tmp_path: Path, **sections: Any) -> GatewayProcess:
    return GatewayProcess(write_config(tmp_path, base_config(tmp_path, **sections))).start()


# --------------------------------------------------------------- X-Forwarded-For (item 2)
def test_every_x_forwarded_for_line_is_read_as_one_list(tmp_path: Path) -> None:
    """The client sends a forged first line; the proxy (HAProxy and others) appends its own
    line with the real address. Only the first line used to be read: the forgery passed."""
    gateway = _gateway(
        tmp_path, auth={"allow_ips": ["203.0.113.0/24"], "trusted_proxies": ["127.0.0.1/32"]}
    )
    port = int(gateway.config["server"]["port"])
    try:
        forged = [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "198.51.100.9")]
        answer = exchange(
            port, request_bytes(payload("Finished Journey", event_id="xff-forged"), headers=forged)
        )
        assert answer is not None and answer.status == 403, answer
        assert answer.json()["error"] == "forbidden"
        honest = [("X-Forwarded-For", "198.51.100.9, 10.1.1.1"), ("X-Forwarded-For", "203.0.113.7")]
        answer = exchange(
            port, request_bytes(payload("Finished Journey", event_id="xff-honest"), headers=honest)
        )
        assert answer is not None and answer.status == 200, answer
        db = tmp_path / "gateway.db"
        assert stored_keys(db) == {"xff-honest"}
    finally:
        gateway.stop()


# ------------------------------------------------------------ one gateway per file (item 7)
def test_a_second_gateway_on_the_same_database_refuses_to_serve(tmp_path: Path) -> None:
    """Two gateways on one SQLite file both claimed every delivery and sent it twice."""
    first = _gateway(tmp_path)
    try:
        second_config = base_config(tmp_path)  # other ports, the same storage.path
        second_path = write_config(tmp_path, second_config, "second.yaml")
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "-c", str(second_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"another gateway (pid {first.process.pid})" in result.stderr  # type: ignore[union-attr]
        assert "Traceback" not in result.stderr
        # the first one is untouched, and the CLI still works beside it
        answer = exchange(
            int(first.config["server"]["port"]),
            request_bytes(payload("Finished Journey", event_id="lock-1")),
        )
        assert answer is not None and answer.status == 200
        for args in (["events", "list", "--json"], ["replay", "--event", "lock-1"]):
            done = subprocess.run(
                [sys.executable, "-m", "gateway", *args, "-c", str(first.config_path)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stdout + done.stderr
        listed = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "events",
                "list",
                "--json",
                "-c",
                str(first.config_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert [e["dedupe_key"] for e in json.loads(listed.stdout)] == ["lock-1"]
    finally:
        first.stop()
    # killed: the kernel dropped the lock, a new gateway starts on the same file
    again = GatewayProcess(first.config_path).start()
    again.stop()

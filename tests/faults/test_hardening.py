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
from tests.support.process import GatewayProcess, get
from tests.support.raw_http import RawConnection, exchange, request_bytes
from tests.support.store import stored_keys
from tests.support.waiting import wait_until

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


# ------------------------------------------------- idle and slow connections, the cap (item 1)
def _closed_by_server(conn: RawConnection) -> bool:
    """True once the server has closed the connection (reading until EOF or reset)."""
    try:
        while True:
            chunk = conn.sock.recv(65536)
            if not chunk:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("listener", ["server", "admin"])
def test_idle_and_slow_connections_are_cut_off(tmp_path: Path, listener: str) -> None:
    """A socket that sent nothing, one that trickled a header line every few tenths of a
    second, and a keep-alive connection left idle used to stay open for an hour."""
    gateway = _gateway(tmp_path, server={"idle_timeout": "1s"})
    port = int(gateway.config[listener]["port"])
    try:
        with RawConnection(port, timeout=20) as silent:
            assert _closed_by_server(silent), "a silent connection was never closed"
        with RawConnection(port, timeout=20) as slow:
            slow.send(b"POST /webhooks/idwise HTTP/1.1\r\nHost: x\r\n")
            slow.sock.settimeout(0.3)
            for i in range(100):  # 30 s of trickling: far beyond the deadline
                if not slow.send(b"X-Slow-%d: y\r\n" % i) or _closed_by_server(slow):
                    break
            else:
                raise AssertionError("a client trickling its headers was never cut off")
        if listener == "server":
            with RawConnection(port, timeout=20) as idle:
                idle.send(
                    request_bytes(payload("Finished Journey", event_id="keepalive"), close=False)
                )
                answer = idle.response()
                assert answer is not None and answer.status == 200
                assert _closed_by_server(idle), "an idle keep-alive connection was never closed"
    finally:
        gateway.stop()


def test_open_connections_are_capped_with_a_503_a_log_line_and_a_metric(tmp_path: Path) -> None:
    gateway = _gateway(tmp_path, server={"max_connections": 20, "idle_timeout": "60s"})
    port = int(gateway.config["server"]["port"])
    idle = [RawConnection(port, timeout=15) for _ in range(20)]
    try:
        answer = exchange(port, request_bytes(payload("Finished Journey", event_id="over-the-cap")))
        assert answer is not None and answer.status == 503, answer
        assert answer.json()["error"] == "too_many_connections"
        assert answer.headers.get("retry-after") == "5"
        assert "over-the-cap" not in stored_keys(tmp_path / "gateway.db")
        for conn in idle[:5]:
            conn.close()
        wait_until(
            lambda: (
                (
                    reply := exchange(
                        port, request_bytes(payload("Finished Journey", event_id="room"))
                    )
                )
                is not None
                and reply.status in (200, 503)
                and reply.status == 200
            ),
            timeout=15,
            what="a connection to be accepted once some closed",
        )
        status, body = get(gateway.admin + "/metrics")  # the admin listener has its own cap
        assert status == 200
        refused = [
            line
            for line in body.decode().splitlines()
            if line.startswith('idwise_gateway_connections_refused_total{listener="webhook"}')
        ]
        assert refused and float(refused[0].split()[-1]) >= 1, refused
        wait_until(
            lambda: bool(
                gateway.logged("connection limit reached: new connections get 503 until some close")
            ),
            10,
            "the log line",
        )
        line = gateway.logged("connection limit reached: new connections get 503 until some close")[
            0
        ]
        assert (line["level"], line["listener"], line["limit"]) == ("warning", "webhook", 20)
    finally:
        for conn in idle:
            conn.close()
        gateway.stop()


# --------------------------------------------------------------- malformed requests (item 8)
def test_malformed_requests_are_one_rate_limited_info_line_each(tmp_path: Path) -> None:
    """aiohttp logged every malformed request as an ERROR with a traceback."""
    gateway = _gateway(tmp_path)
    port = int(gateway.config["server"]["port"])
    try:
        bad = [
            b"POST /webhooks/idwise HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
            b"POST /webhooks/idwise HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
            b"POST /webhooks/idwise HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ]
        answered = 0
        for i in range(60):
            answer = exchange(port, bad[i % len(bad)])
            assert answer is None or answer.status == 400, answer
            if answer is not None:  # a JSON error, as every other answer
                assert answer.json()["error"] == "malformed_request", answer
                assert answer.headers["content-type"].startswith("application/json")
                answered += 1
        assert answered >= len(bad)
        answer = exchange(
            port, request_bytes(payload("Finished Journey", event_id="after-garbage"))
        )
        assert answer is not None and answer.status == 200
        wait_until(lambda: bool(gateway.logged("malformed request")), 10, "malformed request lines")
        wait_until(lambda: bool(gateway.logged("webhook received")), 10, "the valid event's line")
        logs = gateway.logs()
        assert "Traceback" not in logs and "Error handling request" not in logs, logs[-3000:]
        lines = gateway.logged("malformed request")
        assert 1 <= len(lines) < 60, len(lines)  # rate-limited: a burst, then the rest counted
        assert {line["level"] for line in lines} == {"info"}
        assert all(line["status"] == 400 and line["problem"] for line in lines)
        assert not [e for e in gateway.log_lines() if e.get("level") == "error"]
    finally:
        gateway.stop()

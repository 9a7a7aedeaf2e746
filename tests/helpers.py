"""Shared test helpers: real local servers and a real gateway process. No mocks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from gateway import idwise

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def sample(event_type: str) -> bytes:
    return idwise.sample_bytes(event_type)


def sample_with(event_type: str, **body: Any) -> bytes:
    document = idwise.sample(event_type)
    document["body"].update(body)
    return json.dumps(document).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def base_config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A minimal valid config: bearer auth, fast backoff, store in tmp_path."""
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": free_port(), "shutdown_grace": "3s"},
        "admin": {"host": "127.0.0.1", "port": free_port()},
        "storage": {"path": str(tmp_path / "gateway.db"), "busy_timeout": "300ms"},
        "auth": {"bearer": [TOKEN]},
        "delivery": {
            "max_attempts": 5,
            "backoff": {"initial": "50ms", "max": "200ms", "multiplier": 2, "jitter": 0},
            "timeout": "2s",
        },
        "destinations": {},
        "rules": [],
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def write_config(tmp_path: Path, config: dict[str, Any], name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ------------------------------------------------------------------------------ HTTP sink
@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Sink:
    """A real HTTP server on 127.0.0.1 that records requests and answers from a script.

    `responses` is consumed one per request (status or (status, headers, body)); when it
    runs out, `default` answers."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    responses: list[Any] = field(default_factory=list)
    default: Any = 200
    delay: float = 0.0
    runner: web.AppRunner | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(Received(request.path, dict(request.headers), body, time.time()))
        self.arrived.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = self.responses.pop(0) if self.responses else self.default
        if isinstance(answer, int):
            return web.Response(status=answer, text="ok" if answer < 300 else "error")
        status, headers, text = answer
        return web.Response(status=status, headers=headers, text=text)

    async def start(self) -> Sink:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port or 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"sink got {len(self.received)} of {count} requests in {timeout}s"
                )
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)
        return self.received


# -------------------------------------------------------------------- a real gateway process
class GatewayProcess:
    """`python -m gateway serve` as a real child process."""

    def __init__(self, config_path: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.config = yaml.safe_load(config_path.read_text())
        self.extra = extra
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = config_path.parent / f"gateway-{int(time.time() * 1000)}.log"

    @property
    def url(self) -> str:
        server = self.config["server"]
        return f"http://127.0.0.1:{server['port']}{server.get('path', '/webhooks/idwise')}"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.config['server']['port']}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.config['admin']['port']}"

    def start(self, timeout: float = 15.0) -> GatewayProcess:
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "-c", str(self.config_path), *self.extra],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.config_path.parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"gateway exited with {self.process.returncode}:\n{self.logs()}"
                )
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        raise AssertionError(f"gateway did not become healthy:\n{self.logs()}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if hasattr(self, "log_file"):
            self.log_file.close()

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def logged(self, message: str) -> list[dict[str, Any]]:
        """Log lines (JSON) whose msg is `message`."""
        return [entry for entry in self.log_lines() if entry.get("msg") == message]

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.logs().splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
        return lines


def post(
    url: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 10
) -> tuple[int, dict[str, Any]]:
    """Blocking POST (for tests that drive a separate process)."""
    request = urllib.request.Request(
        url, data=body, headers=AUTH if headers is None else headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        try:
            return exc.code, json.loads(payload)
        except ValueError:
            return exc.code, {"raw": payload.decode(errors="replace")}


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def run_cli(
    *args: str,
    cwd: Path | None = None,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def sqlite_rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import sqlite3

    conn = sqlite3.connect(db, timeout=5)
    try:
        return list(conn.execute(sql, params))
    finally:
        conn.close()


@contextlib.contextmanager
def gateway_process(
    config_path: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(config_path, *extra, env=env).start()
    try:
        yield gateway
    finally:
        gateway.stop()


__all__ = ["signal"]

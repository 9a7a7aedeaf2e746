"""The gateway as real child processes: `GatewayProcess` (`python -m gateway serve`), blocking
`post`/`get` for talking to it, `run_cli` (the CLI from a cold start) and `CliServer`, which
runs CLI commands in forked children of one process that imported the gateway once; plus
test scripts and process liveness. Runs processes and does network I/O.

`CliServer`: starting Python and importing the gateway costs ~0.4 s of CPU per command, which
for the table-driven CLI tests (dozens of `check`/`route` runs) would dominate the suite. Its
server imports `gateway.cli` once and forks a fresh child per command: the child takes its
cwd, environment and stdin, runs `gateway.cli.main(argv)` and exits with its return code,
exactly what the `idwise-gateway` console script does. The server never loads a config, so
no child inherits registered secrets or any other state. Same result type as `run_cli`; a
few tests still use `run_cli` so the real entry point stays covered too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.support.config import AUTH

# the `gateway` fixture (tests/conftest.py): an in-process gateway on a test client
GatewayClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


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


@contextlib.contextmanager
def gateway_process(
    config_path: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(config_path, *extra, env=env).start()
    try:
        yield gateway
    finally:
        gateway.stop()


_SERVER = r"""
import io, json, os, sys, tempfile, traceback
import gateway.cli

protocol_in = os.fdopen(os.dup(0), "r", encoding="utf-8")
protocol_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
scratch = tempfile.mkdtemp(prefix="fast-cli-")
for line in protocol_in:
    request = json.loads(line)
    paths = {name: os.path.join(scratch, name) for name in ("in", "out", "err")}
    with open(paths["in"], "wb") as f:
        f.write((request["stdin"] or "").encode())
    protocol_out.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for fd, name, mode in ((0, "in", os.O_RDONLY), (1, "out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), (2, "err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
                target = os.open(paths[name], mode, 0o600)
                os.dup2(target, fd)
                os.close(target)
            sys.stdin = open(0, "r", encoding="utf-8", closefd=False)
            sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
            sys.stderr = open(2, "w", encoding="utf-8", closefd=False)
            os.environ.clear()
            os.environ.update(request["env"])
            if request["cwd"]:
                os.chdir(request["cwd"])
            try:
                code = gateway.cli.main(request["args"])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                traceback.print_exc()
                code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    with open(paths["out"], encoding="utf-8", errors="replace") as f:
        out = f.read()
    with open(paths["err"], encoding="utf-8", errors="replace") as f:
        err = f.read()
    protocol_out.write(json.dumps({"returncode": code, "stdout": out, "stderr": err}) + "\n")
    protocol_out.flush()
"""


class CliServer:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.lock = threading.Lock()

    def run(
        self,
        *args: str,
        cwd: os.PathLike[str] | str | None = None,
        stdin: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        request = {
            "args": list(args),
            "cwd": os.fspath(cwd) if cwd is not None else os.getcwd(),
            "env": {**os.environ, **(env or {})},
            "stdin": stdin.decode() if stdin is not None else None,
        }
        with self.lock:
            assert self.process.stdin is not None and self.process.stdout is not None
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the CLI server died (exit {self.process.poll()})")
        answer = json.loads(line)
        return subprocess.CompletedProcess(
            ["idwise-gateway", *args], answer["returncode"], answer["stdout"], answer["stderr"]
        )

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def write_script(folder: Path, name: str, body: str) -> Path:
    """An executable #!/bin/sh script in `folder`."""
    path = folder / name
    path.write_text("#!/bin/sh\n" + body.lstrip("\n"))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def is_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie no longer runs anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_dead(pids: list[int], timeout: float = 1.0) -> list[int]:
    """The pids still alive after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    alive = [pid for pid in pids if is_alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [pid for pid in alive if is_alive(pid)]
    return alive


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.M)
    assert match, status
    return int(match.group(1))


__all__ = ["signal"]

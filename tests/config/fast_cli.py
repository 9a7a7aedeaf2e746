"""Run `idwise-gateway` commands as real child processes, without paying the import each time.

Starting Python and importing the gateway costs ~0.4 s of CPU per command, which for the
table-driven CLI tests (dozens of `check`/`route` runs) dominates the suite. A server process
imports `gateway.cli` once and forks a fresh child per command: the child takes its cwd,
environment and stdin, runs `gateway.cli.main(argv)` and exits with its return code, exactly
what the `idwise-gateway` console script does. The server itself never loads a config, so no
child inherits registered secrets or any other state. Same result type as `run_cli`.

A few tests still use `tests.helpers.run_cli` (the console entry from a cold start) so the
real entry point stays covered too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

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


@pytest.fixture(scope="session")
def cli() -> Iterator[CliServer]:
    server = CliServer()
    try:
        yield server
    finally:
        server.close()

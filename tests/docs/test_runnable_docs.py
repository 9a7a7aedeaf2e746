"""The shell blocks the docs mark runnable, run as written from a fresh copy of the
repository against a real gateway.

A block counts when a fenced ```sh block follows one of these HTML comments (invisible on
GitHub):

    <!-- runnable -->              run it; it must exit 0 (bash -euo pipefail)
    <!-- runnable: retry -->       the same, tried again for a few seconds while it fails
                                   (it reads what a delivery writes a moment later)
    <!-- runnable: background -->  a command that keeps running (`serve`): started in the
                                   background, waited for until /healthz answers, stopped
                                   with SIGTERM after the file's last block

Each file gets its own copy of the repository (the tracked and untracked-but-not-ignored
files) and its own gateway. The docs name the default ports 8080 and 9091; so that runs in
parallel never meet, they are replaced by free ports in the blocks and in the copy's config
files, and nothing else is changed. Everything stays on 127.0.0.1, each block has a time
limit, and the gateway is stopped however the test ends.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.config import ROOT, free_port

pytestmark = pytest.mark.slow

BLOCK = re.compile(r"^<!-- runnable(?::\s*(\w+))? -->\n```sh\n(.*?)\n```$", re.S | re.M)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: variables the docs' configs read; unset, so their demo defaults apply as on a fresh machine
PREFIXES = ("IDWISE_", "SLACK_", "SMTP_", "ACTIVATION_", "ADMIN_")


@dataclass(frozen=True)
class Block:
    kind: str  # "run", "retry" or "background"
    code: str
    line: int


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    return [
        Block(m.group(1) or "run", m.group(2), text.count("\n", 0, m.start()) + 2)
        for m in BLOCK.finditer(text)
    ]


def fresh_copy(target: Path) -> Path:
    """The repository's files as a clone would have them (plus uncommitted edits)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    return target


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIXES)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


class Runner:
    def __init__(self, folder: Path, doc: Path) -> None:
        self.folder = folder
        self.doc = doc
        self.ports = {"8080": str(free_port()), "9091": str(free_port())}
        self.env = environment()
        self.background: list[tuple[subprocess.Popen[bytes], Path]] = []
        for config in folder.glob("*.yaml"):
            config.write_text(self.localize(config.read_text()))

    def localize(self, text: str) -> str:
        for default, port in self.ports.items():
            text = re.sub(rf"\b{default}\b", port, text)
        return text

    def where(self, block: Block) -> str:
        return f"{self.doc.relative_to(ROOT)}:{block.line}"

    def run(self, block: Block) -> None:
        code = self.localize(block.code)
        if block.kind == "background":
            self.start(block, code)
            return
        tries = 40 if block.kind == "retry" else 1
        for attempt in range(tries):
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", code],
                cwd=self.folder,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if done.returncode == 0:
                return
            if attempt + 1 < tries:
                time.sleep(0.25)
        raise AssertionError(
            f"{self.where(block)}: exit {done.returncode}\n$ {code}\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}\n{self.logs()}"
        )

    def start(self, block: Block, code: str) -> None:
        log = self.folder / f"background-{len(self.background)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", "-c", f"exec {code}"],
                cwd=self.folder,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.background.append((process, log))
        deadline = time.monotonic() + 30
        while not healthy(int(self.ports["8080"])):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.where(block)}: did not start\n{self.logs()}")
            time.sleep(0.1)

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')}" for _, log in self.background
        )

    def stop(self) -> None:
        for process, _ in self.background:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(10)


RUNNABLE = [doc for doc in DOCS if blocks(doc)]


def test_the_readme_and_the_walkthrough_have_runnable_blocks() -> None:
    names = {doc.name for doc in RUNNABLE}
    assert {"README.md", "first-config.md"} <= names


@pytest.mark.timeout(600)
@pytest.mark.parametrize("doc", RUNNABLE, ids=[doc.name for doc in RUNNABLE])
def test_runnable_blocks_run_as_written(doc: Path, tmp_path: Path) -> None:
    runner = Runner(fresh_copy(tmp_path / "repo"), doc)
    try:
        for block in blocks(doc):
            runner.run(block)
    finally:
        runner.stop()
    for process, _ in runner.background:
        assert process.returncode == 0, runner.logs()  # a clean stop after the last block

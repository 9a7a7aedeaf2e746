"""A real PostgreSQL server for the tests: Debian's binaries, initdb into a temp folder,
a free port on 127.0.0.1, run as an unprivileged user (PostgreSQL refuses root). No mocks.

Missing binaries are a test failure, never a skip: CI installs them (`.ci/run`), and a
silently skipped PostgreSQL suite would hide every bug of that backend.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.config import free_port

TEST_USER = "idwise-test"  # the system user the server runs as when the tests run as root
SUPERUSER = "gateway"
PASSWORD = "pg-test-password-7f3a9c"  # tests assert it never shows in output or logs


def find_bindir() -> Path:
    """The newest /usr/lib/postgresql/*/bin, else wherever `initdb` is on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    pytest.fail(
        "PostgreSQL server binaries not found (initdb): install Debian's `postgresql`"
        " package (.ci/run does); the PostgreSQL tests never skip",
        pytrace=False,
    )


def _run_as() -> list[str]:
    """The command prefix that drops root to TEST_USER (created if missing)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
            check=True,
            capture_output=True,
        )
    return ["runuser", "-u", TEST_USER, "--"]


@dataclass
class PostgresServer:
    bindir: Path
    root: Path
    port: int = field(default_factory=free_port)
    fsync: bool = False  # the tests kill processes, not the machine; bench/ turns it on
    process: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _cmd(self, *args: str) -> list[str]:
        return [*_run_as(), *args]

    def init(self) -> PostgresServer:
        self.root.mkdir(parents=True, exist_ok=True)
        prefix = _run_as()
        if prefix:
            user = pwd.getpwnam(TEST_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if prefix:
            os.chown(pwfile, pwd.getpwnam(TEST_USER).pw_uid, -1)
        pwfile.chmod(0o600)
        subprocess.run(
            self._cmd(
                str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                "--pwfile", str(pwfile), "--auth", "scram-sha-256", "-E", "UTF8",
                "--locale", "C.UTF-8" if _has_c_utf8() else "C",
            ),
            check=True,
            capture_output=True,
            cwd=self.root,
        )  # fmt: skip
        pwfile.unlink()
        return self

    def start(self, timeout: float = 30.0) -> PostgresServer:
        log = open(self.root / "postgres.log", "ab")  # noqa: SIM115 - lives with the server
        self.process = subprocess.Popen(
            self._cmd(
                str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
                "-c", f"fsync={'on' if self.fsync else 'off'}", "-c", "max_connections=200",
                "-c", "shared_buffers=64MB",
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"postgres exited:\n{self.logs()}")
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            if ready.returncode == 0:
                return self
            time.sleep(0.1)
        raise AssertionError(f"postgres did not start:\n{self.logs()}")

    def stop(self) -> None:
        """A fast shutdown (what a restart or failover does to the clients), through
        pg_ctl: a signal to the `runuser` wrapper would not reach the postmaster cleanly."""
        if self.process is not None and self.process.poll() is None:
            subprocess.run(
                self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                          "-w", "-t", "30", "stop"),
                capture_output=True,
                cwd=self.root,
            )  # fmt: skip
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def logs(self) -> str:
        try:
            return (self.root / "postgres.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
             "-d", self.dsn(database), "-c", sql],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        if result.returncode != 0:
            raise AssertionError(f"psql failed: {result.stderr}")
        return result.stdout.strip()

    def create_database(self) -> str:
        """A fresh database; its DSN."""
        name = "t_" + uuid.uuid4().hex[:12]
        self.psql(f"CREATE DATABASE {name}")
        return self.dsn(name)


def _has_c_utf8() -> bool:
    result = subprocess.run(["locale", "-a"], capture_output=True, text=True)
    return any(line.lower() in ("c.utf8", "c.utf-8") for line in result.stdout.splitlines())


def make_server() -> PostgresServer:
    root = Path(tempfile.mkdtemp(prefix="idwise-pg-"))
    return PostgresServer(find_bindir(), root).init()


def remove_server(server: PostgresServer) -> None:
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server for the whole run; each test gets its own database (`postgres_dsn`)."""
    server = make_server().start()
    yield server
    remove_server(server)


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()

"""The serve lock: one gateway process serves one SQLite database. Does I/O.

Two gateways on one file would both claim every due delivery and send it twice. `serve`
takes an exclusive `flock` on `<database>.lock` for its whole life and writes its pid into
it, so a second one refuses to start and names the first. The kernel drops the lock when
the process ends, however it ends (kill -9 included), so a stale lock file never blocks a
restart. CLI commands take no lock: reads and `replay` go through SQLite's own locking,
which is what lets them run beside `serve`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from gateway.errors import StoreError
from gateway.store.sqlite.schema import prepare_folder


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


class ServeLock:
    """Held from `acquire` until `release` (or the process's end)."""

    def __init__(self, database: Path) -> None:
        self.path = lock_path(database)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Raises StoreError("in_use") naming the process that holds the lock."""
        prepare_folder(self.path)
        # O_CLOEXEC: a script destination's process must not inherit (and outlive us with)
        # the lock
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise StoreError(
                "in_use",
                f"another gateway ({who}) is serving this database; two would send every "
                f"delivery twice. Stop it, or give this one its own storage.path "
                f"(lock: {self.path})",
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        # the file stays: unlinking a lock file lets a third process lock a new inode while
        # a second still waits on the old one
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None

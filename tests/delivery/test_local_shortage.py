"""A delivery that cannot even start for a shortage of our own (file descriptors here, for
real: the process's limit is lowered and every free descriptor taken) is retried without
counting against max_attempts (issue 13, item 1): fd exhaustion is not the destination's
fault, and used to burn the budget and leave deliveries dead."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config.load import load_config
from gateway.delivery.attempt import Attempter
from gateway.destinations.client import HttpClient
from gateway.events import parse_event
from gateway.store import DueDelivery
from gateway.store.sqlite import SqliteStore
from tests.support.config import base_config, write_config
from tests.support.payloads import payload


@contextlib.contextmanager
def no_descriptors_left() -> Iterator[None]:
    """EMFILE for the next open(), socket() or pipe() of this process, until the end."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    taken: list[int] = []
    open_now = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 8, hard))
    try:
        with contextlib.suppress(OSError):
            while True:
                taken.append(os.open("/dev/null", os.O_RDONLY))
        yield
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _destinations(tmp_path: Path) -> dict[str, Any]:
    script = tmp_path / "ok.sh"
    script.write_text("#!/bin/sh\ncat >/dev/null\n")
    script.chmod(0o755)
    config = base_config(
        tmp_path,
        delivery={"max_attempts": 1},
        destinations={
            "script": {"type": "script", "command": [str(script)]},
            "http": {"type": "http", "url": "http://127.0.0.1:9/x"},
        },
    )
    return dict(load_config(write_config(tmp_path, config), environ={}).destinations)


@pytest.mark.parametrize("kind", ["script", "http"])
async def test_descriptor_exhaustion_is_retried_without_using_the_budget(
    tmp_path: Path, kind: str
) -> None:
    destination = _destinations(tmp_path)[kind]
    job = DueDelivery(
        1, 1, kind, attempts=0, queued_at=time.time(), raw=payload(event_id="e-1"), rule="r"
    )
    async with HttpClient() as client:
        attempter = Attempter(client, time.time, random.random)
        with no_descriptors_left():
            record = await attempter.attempt(destination, job)
    # max_attempts is 1: an ordinary failure of this one attempt is dead at once
    assert (record.outcome, record.reason, record.counted) == ("retry", "local_resources", False)
    assert record.next_attempt_at is not None
    assert os.strerror(errno.EMFILE) in (record.detail or "")


async def test_the_store_keeps_an_uncounted_attempt_in_the_history_only(tmp_path: Path) -> None:
    destination = _destinations(tmp_path)["script"]
    store = SqliteStore(tmp_path / "gateway.db")
    await store.open()
    try:
        event = parse_event(payload(event_id="e-2"))
        await store.accept(event, [("script", "r")], ["r"], None, {})
        (job,) = await store.due("script", time.time() + 1, 10, False)
        async with HttpClient() as client:
            attempter = Attempter(client, time.time, random.random)
            with no_descriptors_left():
                record = await attempter.attempt(destination, job)
            await store.record([record])
            (again,) = await store.due("script", time.time() + 60, 10, False)
            assert (again.attempts, again.attempt_base) == (1, 1)  # budget untouched
            delivered = await attempter.attempt(destination, again)
        assert delivered.outcome == "delivered" and delivered.number == 2
    finally:
        await store.close()

"""Waiting for a condition instead of sleeping for a guess: poll a check until it returns
something truthy (and return that), failing with what was awaited and the last value seen.
`wait_until` blocks (tests that drive a separate process); `async_wait_until` yields to the
loop between checks (tests whose gateway runs on the test's own loop). No I/O of its own.

A timeout here only bounds how long a broken test hangs: it is never what a test asserts, so
it is generous. To wait for requests at a sink, use `Sink.wait_for`, which wakes on arrival.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(
    check: Callable[[], T], timeout: float = 10.0, what: str = "condition", interval: float = 0.05
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s (last value: {value!r})")
        time.sleep(interval)


async def async_wait_until(
    check: Callable[[], Any],
    timeout: float = 10.0,  # noqa: ASYNC109 - a deadline for polling, not for one await
    what: str = "condition",
    interval: float = 0.02,
) -> Any:
    """As `wait_until`. `check` is synchronous and runs on a worker thread, so a check that
    reads the store (tests.support.store) does not hold up the gateway on this loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)

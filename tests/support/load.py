"""A threaded load generator: worker threads posting events with unique eventIds at a gateway
process until stopped, keeping every request's outcome. Does network I/O."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.support.payloads import payload
from tests.support.process import post


@dataclass(frozen=True)
class Outcome:
    event_id: str
    event_type: str
    status: int | None  # None: no HTTP answer (refused, reset, timeout)
    answer: str  # "accepted", "duplicate", an error code, or the client exception's name
    sent_at: float
    done_at: float


class Load:
    """Worker threads posting events with unique eventIds until stopped.

    `choose(worker, n)` returns (event_type, event_id, extra body fields) for a worker's n-th
    request. Every request's outcome is kept, including requests that got no answer."""

    def __init__(
        self,
        url: str,
        choose: Callable[[int, int], tuple[str, str, dict[str, Any]]],
        workers: int = 4,
        timeout: float = 15.0,
        pause: float = 0.0,
    ) -> None:
        self.url = url
        self.choose = choose
        self.timeout = timeout
        self.pause = pause
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(w,), name=f"load-{w}", daemon=True)
            for w in range(workers)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def _run(self, worker: int) -> None:
        n = 0
        while not self._stop.is_set():
            event_type, event_id, extra = self.choose(worker, n)
            n += 1
            body = payload(event_type, event_id=event_id, **extra)
            started = time.monotonic()
            try:
                status, answer = post(self.url, body, timeout=self.timeout)
                text = str(answer.get("status") if status == 200 else answer.get("error"))
            except Exception as exc:  # refused, reset, timeout, incomplete read: no answer
                status, text = None, type(exc).__name__
            self.outcomes.append(
                Outcome(event_id, event_type, status, text, started, time.monotonic())
            )
            if status is None or self.pause:
                time.sleep(self.pause or 0.02)  # the gateway is down: do not spin

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        start = len(self.outcomes)
        while len(self.outcomes) - start < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"load made {len(self.outcomes) - start} of {count} requests")
            time.sleep(0.01)

    def accepted(self) -> set[str]:
        return {o.event_id for o in self.outcomes if o.status == 200}

    def statuses(self) -> dict[Any, int]:
        counts: dict[Any, int] = {}
        for o in self.outcomes:
            key = o.status if o.status is not None else o.answer
            counts[key] = counts.get(key, 0) + 1
        return counts

"""Helpers for the delivery tests: a sink scripted per event, payload builders, polling."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway import idwise
from tests.helpers import Received, Sink, sqlite_rows

PATH = "/webhooks/idwise"


def payload(
    event_id: str, journey: str = "journey-a", event_type: str = "Finished Journey"
) -> bytes:
    document = idwise.sample(event_type)
    document["body"]["eventId"] = event_id
    document["body"]["journeyId"] = journey
    return json.dumps(document).encode()


def event_id_of(received: Received) -> str:
    return str(received.json()["body"]["eventId"])


@dataclass
class ScriptedSink(Sink):
    """A Sink that can also script answers per eventId (`by_event`), hold answers until
    released (`hold`), and remembers what it answered to each request (`answers`, parallel
    to `received`; None while a request is still waiting for its answer)."""

    by_event: dict[str, list[Any]] = field(default_factory=dict)
    answers: list[int | None] = field(default_factory=list)
    hold: asyncio.Event | None = None  # when set to an Event: answer only once it is set

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        index = len(self.received)
        self.received.append(Received(request.path, dict(request.headers), body, time.time()))
        self.answers.append(None)
        self.arrived.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.hold is not None:
            await self.hold.wait()
        try:
            event_id = str(json.loads(body)["body"]["eventId"])
        except (ValueError, KeyError, TypeError):
            event_id = ""
        script = self.by_event.get(event_id)
        if script:
            answer = script.pop(0)
        elif self.responses:
            answer = self.responses.pop(0)
        else:
            answer = self.default
        status = answer if isinstance(answer, int) else answer[0]
        self.answers[index] = status
        if isinstance(answer, int):
            return web.Response(status=answer, text="ok" if answer < 300 else "error")
        status, headers, text = answer
        return web.Response(status=status, headers=headers, text=text)

    def ids(self) -> list[str]:
        return [event_id_of(r) for r in self.received]

    def accepted_ids(self) -> list[str]:
        """eventIds of the requests this sink answered with a 2xx, in arrival order."""
        return [
            event_id_of(r)
            for r, status in zip(self.received, self.answers, strict=True)
            if status is not None and 200 <= status < 300
        ]


def rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return sqlite_rows(db, sql, params)


async def wait_for(check: Callable[[], Any], within: float = 10.0, what: str = "condition") -> Any:
    """Poll `check` (sync) until it returns something truthy; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within}s (last value: {value!r})")
        await asyncio.sleep(0.02)


def statuses(db: Path) -> dict[str, str]:
    """destination -> status, for a database holding one event."""
    return dict(rows(db, "SELECT destination, status FROM deliveries"))


async def wait_status(
    db: Path, wanted: str, count: int = 1, within: float = 10.0, destination: str | None = None
) -> None:
    """Wait until `count` deliveries (of `destination`, if given) have status `wanted`."""
    sql = "SELECT count(*) FROM deliveries WHERE status = ?"
    params: tuple[Any, ...] = (wanted,)
    if destination is not None:
        sql += " AND destination = ?"
        params += (destination,)

    def reached() -> bool:
        return bool(rows(db, sql, params)[0][0] >= count)

    await wait_for(
        reached,
        within,
        f"{count} deliveries {wanted}" + (f" to {destination}" if destination else ""),
    )


def attempts(db: Path, destination: str | None = None) -> list[tuple[Any, ...]]:
    """(number, outcome, reason, status_code) of every attempt, in the order recorded."""
    sql = (
        "SELECT a.number, a.outcome, a.reason, a.status_code FROM attempts a"
        " JOIN deliveries d ON d.id = a.delivery_id"
    )
    params: tuple[Any, ...] = ()
    if destination is not None:
        sql += " WHERE d.destination = ?"
        params = (destination,)
    return rows(db, sql + " ORDER BY a.id", params)


async def stays(sink: Sink, count: int, duration: float) -> None:
    """The sink gets nothing beyond `count` requests for `duration` seconds (no re-sends)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert len(sink.received) == count, (
            f"sink got {len(sink.received)} requests, expected {count}"
        )
        await asyncio.sleep(0.02)
    assert len(sink.received) == count, f"sink got {len(sink.received)} requests, expected {count}"

"""The HTTP receiver tests deliver to: a real aiohttp server on 127.0.0.1 that records every
request and answers from a script, and `SinkLoop`, which hosts sinks on a loop thread for
synchronous tests that drive a gateway process. Does network I/O.

One `Sink` serves every case: fixed or scripted answers (`responses`, then `default`),
answers scripted per eventId (`by_event`), slow answers (`delay`), answers held until
released (`hold`), and `SlackStandIn`, which answers like Slack's incoming webhooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

SLACK_TOKEN = "XyZslackWebhookSecret0123456789"  # the secret part of an incoming-webhook URL


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


def event_id_of(received: Received) -> str:
    return str(received.json()["body"]["eventId"])


# an answer: a status, or (status, headers, text)
Answer = int | tuple[int, dict[str, str], str]


@dataclass
class Sink:
    """Records requests and answers each from a script.

    An answer is a status or (status, headers, text). For each request the first of these
    that has one answers: `by_event[eventId]` (consumed one per request of that event),
    `responses` (consumed one per request), `default`. `answers` is parallel to `received`
    (None while a request still waits for its answer); `answered` lists (request, status)
    in the order the answers went out."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    responses: list[Any] = field(default_factory=list)
    default: Any = 200
    delay: float = 0.0
    by_event: dict[str, list[Any]] = field(default_factory=dict)
    hold: asyncio.Event | None = None  # when set to an Event: answer only once it is set
    answers: list[int | None] = field(default_factory=list)
    answered: list[tuple[Received, int]] = field(default_factory=list)
    in_flight_on_arrival: list[int] = field(default_factory=list)  # unanswered, as each came
    # cancel a handler whose client went away (a stand-in that may be stopped mid-answer)
    cancel_on_disconnect: bool = False
    runner: web.AppRunner | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def url_for(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        received = Received(request.path, dict(request.headers), body, time.time())
        index = len(self.received)
        self.in_flight_on_arrival.append(self.answers.count(None))
        self.received.append(received)
        self.answers.append(None)
        self.arrived.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.hold is not None:
            await self.hold.wait()
        answer = self.choose(received)
        status = answer if isinstance(answer, int) else answer[0]
        self.answers[index] = status
        self.answered.append((received, status))
        if isinstance(answer, int):
            return web.Response(status=answer, text="ok" if answer < 300 else "error")
        status, headers, text = answer
        return web.Response(status=status, headers=headers, text=text)

    def choose(self, received: Received) -> Any:
        script = self.by_event.get(_event_id(received.body)) if self.by_event else None
        if script:
            return script.pop(0)
        if self.responses:
            return self.responses.pop(0)
        return self.unscripted(received)

    def unscripted(self, received: Received) -> Any:
        return self.default

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        options: dict[str, Any] = {"access_log": None}
        if self.cancel_on_disconnect:
            options.update(handler_cancellation=True, shutdown_timeout=0.5)
        self.runner = web.AppRunner(app, **options)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port or 0).start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:  # noqa: ASYNC109
        """The requests, once there are at least `count` (woken by each arrival)."""
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

    async def stays(self, count: int, duration: float) -> None:
        """Nothing beyond `count` requests arrives for `duration` seconds (no re-sends)."""
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            assert len(self.received) == count, (
                f"sink got {len(self.received)} requests, expected {count}"
            )
            await asyncio.sleep(0.02)
        assert len(self.received) == count, (
            f"sink got {len(self.received)} requests, expected {count}"
        )

    # ---- what arrived
    def ids(self) -> list[str]:
        return [event_id_of(r) for r in self.received]

    def accepted_ids(self) -> list[str]:
        """eventIds of the requests answered with a 2xx, in arrival order."""
        return [
            event_id_of(r)
            for r, status in zip(self.received, self.answers, strict=True)
            if status is not None and 200 <= status < 300
        ]

    def delivered(self, path: str) -> list[str]:
        """Idempotency keys answered 2xx on `path`, in the order the answers went out."""
        return [
            r.headers.get("Idempotency-Key", "")
            for r, status in list(self.answered)
            if r.path == "/" + path.lstrip("/") and 200 <= status < 300
        ]

    def attempts(self, path: str) -> list[Received]:
        return [r for r in list(self.received) if r.path == "/" + path.lstrip("/")]


def _event_id(body: bytes) -> str:
    try:
        return str(json.loads(body)["body"]["eventId"])
    except (ValueError, KeyError, TypeError):
        return ""


@dataclass
class SlackStandIn(Sink):
    """Answers like https://hooks.slack.com/services/T.../B.../<token>.

    Without a scripted answer it validates the message the way Slack does: unknown webhook
    -> 404 `no_service`; not a JSON object -> 400 `invalid_payload`; neither `text` nor
    `blocks` -> 400 `no_text`; else 200 `ok`."""

    cancel_on_disconnect: bool = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/T0GATEWAY/B0GATEWAY/{SLACK_TOKEN}"

    def answer(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        """Script the next answer."""
        self.responses.append((status, headers or {}, text))

    def unscripted(self, received: Received) -> Any:
        parts = received.path.split("/")
        if len(parts) != 5 or parts[1] != "services" or parts[4] != SLACK_TOKEN:
            return (404, {}, "no_service")
        try:
            message = json.loads(received.body)
        except ValueError:
            return (400, {}, "invalid_payload")
        if not isinstance(message, dict):
            return (400, {}, "invalid_payload")
        if not message.get("text") and not message.get("blocks"):
            return (400, {}, "no_text")
        return (200, {}, "ok")


class SinkLoop:
    """An asyncio loop in a daemon thread that hosts sinks for synchronous tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sinks", daemon=True)
        self.thread.start()
        self.sinks: list[Sink] = []

    def run(self, coroutine: Any, timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self, **kwargs: Any) -> Sink:
        # the Sink's asyncio.Event must belong to this loop
        async def make() -> Sink:
            return await Sink(**kwargs).start()

        sink: Sink = self.run(make())
        self.sinks.append(sink)
        return sink

    def stop_sink(self, sink: Sink) -> None:
        self.run(sink.stop())
        self.sinks.remove(sink)

    def close(self) -> None:
        for sink in list(self.sinks):
            with contextlib.suppress(Exception):
                self.stop_sink(sink)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


# the `make_sink` fixture (tests/conftest.py): `await make_sink(**fields)` starts a Sink
MakeSink = Callable[..., Awaitable[Sink]]

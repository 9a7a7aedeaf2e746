"""The delivery engine in an in-process gateway against real local HTTP servers: retries,
dead letters, Retry-After, timeouts, outages, journey order, fan-out, lanes, rate limits."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from gateway.config.load import load_config
from gateway.delivery import DeliveryEngine
from gateway.destinations.client import HttpClient
from gateway.errors import StoreError
from gateway.events import parse_event
from gateway.store import DueDelivery
from gateway.store.sqlite import SqliteStore
from gateway.web.keys import RUNTIME
from tests.support.config import AUTH, base_config, free_port, write_config
from tests.support.payloads import payload
from tests.support.process import GatewayClient, run_cli
from tests.support.sinks import MakeSink, Sink
from tests.support.store import (
    attempt_history,
    attempts,
    deliveries,
    delivery,
    wait_status,
)
from tests.support.waiting import async_wait_until


def http(url: str, **delivery: Any) -> dict[str, Any]:
    destination: dict[str, Any] = {"type": "http", "url": url}
    if delivery:
        destination["delivery"] = delivery
    return destination


def to(*destinations: str) -> list[dict[str, Any]]:
    return [{"name": "all", "to": list(destinations)}]


def planned_delay(db: Path) -> float:
    """How long after its first attempt ended the engine scheduled the second (one delivery):
    the decision itself, not how promptly a busy machine carried it out."""
    (only,) = deliveries(db)
    shown = delivery(db, only["id"])
    first = shown["attempt_history"][0]
    return float(shown["next_attempt_at"] - (first["started_at"] + first["duration"]))


async def accept(client: Any, raw: bytes) -> None:
    response = await client.post("/webhooks/idwise", data=raw, headers=AUTH)
    assert response.status == 200, await response.text()
    assert (await response.json())["status"] == "accepted"


# ------------------------------------------------------------------- retries and dead letters
async def test_500_503_200_is_delivered_exactly_once(
    gateway: GatewayClient, make_sink: MakeSink, tmp_path: Path
) -> None:
    sink = await make_sink(responses=[500, 503], default=200)
    client = await gateway(destinations={"svc": http(sink.url)}, rules=to("svc"))
    raw = payload(event_id="retry-1")
    await accept(client, raw)
    await wait_status(tmp_path / "gateway.db", "delivered", timeout=5)
    assert attempts(tmp_path / "gateway.db") == [
        (1, "retry", "http_5xx", 500),
        (2, "retry", "http_5xx", 503),
        (3, "delivered", None, 200),
    ]
    assert [
        (d["status"], d["attempts"], d["reason"]) for d in deliveries(tmp_path / "gateway.db")
    ] == [("delivered", 3, None)]
    await sink.stays(3, 0.5)  # longer than backoff.max: nothing more is sent
    assert sink.answers == [500, 503, 200]
    # every attempt carries the original bytes and the same idempotency key
    assert {r.body for r in sink.received} == {raw}
    assert {r.headers["Idempotency-Key"] for r in sink.received} == {"retry-1"}


@pytest.mark.slow
async def test_400_is_dead_after_one_attempt_and_listed_as_dead(
    gateway: GatewayClient, make_sink: MakeSink, tmp_path: Path
) -> None:
    sink = await make_sink(responses=[400], default=200)
    client = await gateway(destinations={"svc": http(sink.url)}, rules=to("svc"))
    await accept(client, payload(event_id="bad-1"))
    await wait_status(tmp_path / "gateway.db", "dead", timeout=5)
    await sink.stays(1, 0.4)
    assert attempts(tmp_path / "gateway.db") == [(1, "dead", "http_400", 400)]

    config = str(tmp_path / "config.yaml")
    listed = await asyncio.to_thread(
        run_cli, "deliveries", "list", "-c", config, "--status", "dead", "--json"
    )
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["status"] == "dead"
    assert row["reason"] == "http_400"
    assert row["attempts"] == 1
    assert row["destination"] == "svc"
    assert row["dedupe_key"] == "bad-1"
    delivered = await asyncio.to_thread(
        run_cli, "deliveries", "list", "-c", config, "--status", "delivered", "--json"
    )
    assert json.loads(delivered.stdout) == []


async def test_always_failing_destination_dies_of_max_attempts(
    gateway: GatewayClient, make_sink: MakeSink, tmp_path: Path
) -> None:
    sink = await make_sink(default=503)
    client = await gateway(destinations={"svc": http(sink.url, max_attempts=3)}, rules=to("svc"))
    await accept(client, payload(event_id="tired-1"))
    await wait_status(tmp_path / "gateway.db", "dead", timeout=5)
    assert [(d["attempts"], d["reason"]) for d in deliveries(tmp_path / "gateway.db")] == [
        (3, "max_attempts (http_5xx)")
    ]
    await sink.stays(3, 0.4)


# ----------------------------------------------------------------------------- Retry-After
async def test_429_retry_after_delays_the_next_attempt(
    gateway: GatewayClient, make_sink: MakeSink, tmp_path: Path
) -> None:
    sink = await make_sink(responses=[(429, {"Retry-After": "1"}, "slow down")], default=200)
    backoff = {"initial": "50ms", "max": "5s", "multiplier": 2, "jitter": 0}
    client = await gateway(destinations={"svc": http(sink.url, backoff=backoff)}, rules=to("svc"))
    await accept(client, payload(event_id="limited-1"))
    first, second = await sink.wait_for(2, timeout=5)
    # not the 50 ms backoff: the server's 1 s floor (never sooner, however busy the machine)
    assert second.at - first.at >= 0.98, second.at - first.at
    await wait_status(tmp_path / "gateway.db", "delivered", timeout=3)
    # and no later than that floor: what the engine planned, read from the store
    assert planned_delay(tmp_path / "gateway.db") == pytest.approx(1.0, abs=0.1)
    assert attempts(tmp_path / "gateway.db") == [
        (1, "retry", "http_429", 429),
        (2, "delivered", None, 200),
    ]


async def test_retry_after_is_capped_at_backoff_max(
    gateway: GatewayClient, make_sink: MakeSink, tmp_path: Path
) -> None:
    # backoff.max is 200 ms (base config): a 30 s Retry-After waits 200 ms, not 50 ms, not 30 s
    sink = await make_sink(responses=[(503, {"Retry-After": "30"}, "busy")], default=200)
    client = await gateway(destinations={"svc": http(sink.url)}, rules=to("svc"))
    await accept(client, payload(event_id="capped-1"))
    first, second = await sink.wait_for(2, timeout=5)
    assert second.at - first.at >= 0.19, second.at - first.at
    await wait_status(tmp_path / "gateway.db", "delivered", timeout=3)
    assert planned_delay(tmp_path / "gateway.db") == pytest.approx(0.2, abs=0.1)


# ----------------------------------------------------------------------- timeouts, outages
async def test_timeout_is_retried(
    gateway: GatewayClient, make_sink: MakeSink, tmp_path: Path
) -> None:
    # the first request gets no answer until its attempt is recorded: only a timeout ends it
    sink = await make_sink(hold=asyncio.Event(), default=200)
    client = await gateway(destinations={"svc": http(sink.url, timeout="300ms")}, rules=to("svc"))
    db = tmp_path / "gateway.db"
    await accept(client, payload(event_id="slow-1"))
    await async_wait_until(lambda: attempts(db), timeout=5, what="the first attempt")
    assert sink.hold is not None
    sink.hold.set()  # the next attempt gets a prompt answer
    await wait_status(tmp_path / "gateway.db", "delivered", timeout=5)
    assert attempts(tmp_path / "gateway.db") == [
        (1, "retry", "timeout", None),
        (2, "delivered", None, 200),
    ]
    duration = attempt_history(tmp_path / "gateway.db")[0]["duration"]
    # the destination's 300 ms, not the config-wide 2 s (the sink answered only afterwards)
    assert 0.25 <= duration < 2.0
    assert len(sink.received) == 2


async def test_destination_down_then_up_is_delivered(
    gateway: GatewayClient, make_sink: MakeSink, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens here yet: connection refused
    url = f"http://127.0.0.1:{port}/hook"
    client = await gateway(
        destinations={"svc": http(url, max_attempts=1000, max_age="1h")}, rules=to("svc")
    )
    db = tmp_path / "gateway.db"
    await accept(client, payload(event_id="outage-1"))
    await async_wait_until(lambda: len(attempts(db)) >= 5, timeout=5, what="5 refused attempts")
    assert {a[1:] for a in attempts(db)} == {("retry", "connection", None)}
    assert [d["status"] for d in deliveries(db)] == ["pending"]
    sink = await make_sink(port=port, default=200)
    await wait_status(db, "delivered", timeout=5)
    history = attempts(db)
    assert history[-1][1:] == ("delivered", None, 200)
    assert all(a[1:3] == ("retry", "connection") for a in history[:-1])
    assert [a[0] for a in history] == list(range(1, len(history) + 1))
    await sink.stays(1, 0.3)
    assert sink.ids() == ["outage-1"]


# ---------------------------------------------------------------------------------- order
async def test_ordered_journey_waits_for_its_failing_head(
    gateway: GatewayClient, make_sink: MakeSink, tmp_path: Path
) -> None:
    sink = await make_sink(by_event={"a1": [500, 500]}, default=200)
    backoff = {"initial": "250ms", "max": "250ms", "multiplier": 2, "jitter": 0}
    client = await gateway(destinations={"svc": http(sink.url, backoff=backoff)}, rules=to("svc"))
    for event_id, journey in (("a1", "J-A"), ("a2", "J-A"), ("a3", "J-A"), ("b1", "J-B")):
        await accept(client, payload(event_id=event_id, journey=journey))
    await wait_status(tmp_path / "gateway.db", "delivered", count=4, timeout=5)
    ids = sink.ids()
    assert ids.count("a1") == 3
    assert sorted(ids) == ["a1", "a1", "a1", "a2", "a3", "b1"]
    # journey A strictly in received order; nothing of it overtakes its retrying head
    assert [i for i in ids if i.startswith("a")] == ["a1", "a1", "a1", "a2", "a3"]
    assert [i for i in sink.accepted_ids() if i.startswith("a")] == ["a1", "a2", "a3"]
    # journey B is not held back by journey A's failures
    last_a1 = max(n for n, i in enumerate(ids) if i == "a1")
    assert ids.index("b1") < last_a1


async def test_unordered_destination_does_not_hold_the_journey_back(
    gateway: GatewayClient, make_sink: MakeSink, tmp_path: Path
) -> None:
    sink = await make_sink(by_event={"a1": [500, 500]}, default=200)
    backoff = {"initial": "250ms", "max": "250ms", "multiplier": 2, "jitter": 0}
    client = await gateway(
        destinations={"svc": http(sink.url, backoff=backoff, ordered=False)}, rules=to("svc")
    )
    for event_id in ("a1", "a2", "a3"):
        await accept(client, payload(event_id=event_id, journey="J-A"))
    await wait_status(tmp_path / "gateway.db", "delivered", count=3, timeout=5)
    ids = sink.ids()
    last_a1 = max(n for n, i in enumerate(ids) if i == "a1")
    assert ids.index("a2") < last_a1
    assert ids.index("a3") < last_a1
    assert sink.accepted_ids()[-1] == "a1"


# ------------------------------------------------------------------------------- fan-out
@pytest.mark.parametrize(
    ("script", "final", "reason", "bad_requests"),
    [
        ([400], "dead", "http_400", 1),
        ([503, 503], "delivered", None, 3),
        ([503, 503, 503], "dead", "max_attempts (http_5xx)", 3),
    ],
    ids=["permanent", "for-a-while", "until-max-attempts"],
)
async def test_each_destination_has_its_own_fate(
    gateway: GatewayClient,
    make_sink: MakeSink,
    tmp_path: Path,
    script: list[int],
    final: str,
    reason: str | None,
    bad_requests: int,
) -> None:
    good = await make_sink(default=200)
    bad = await make_sink(responses=script, default=200)
    client = await gateway(
        destinations={"good": http(good.url), "bad": http(bad.url, max_attempts=3)},
        rules=to("good", "bad"),
    )
    db = tmp_path / "gateway.db"
    await accept(client, payload(event_id="fan-1"))
    await wait_status(db, final, destination="bad", timeout=5)
    await wait_status(db, "delivered", destination="good", timeout=5)
    await good.stays(1, 0.5)
    assert len(bad.received) == bad_requests
    assert sorted((d["destination"], d["status"], d["reason"]) for d in deliveries(db)) == [
        ("bad", final, reason),
        ("good", "delivered", None),
    ]
    assert attempts(db, "good") == [(1, "delivered", None, 200)]


# ------------------------------------------------------------------ lanes and rate limits
async def test_slow_destination_does_not_delay_another(
    gateway: GatewayClient, make_sink: MakeSink, tmp_path: Path
) -> None:
    # the slow destination answers nothing until the fast one has had all three
    slow = await make_sink(hold=asyncio.Event(), delay=0.3, default=200)
    fast = await make_sink(default=200)
    client = await gateway(
        destinations={"slow": http(slow.url, concurrency=1), "fast": http(fast.url)},
        rules=to("slow", "fast"),
        delivery={"timeout": "5s"},
    )
    for n in range(3):
        await accept(client, payload(event_id=f"lane-{n}", journey=f"J-{n}"))
    await fast.wait_for(3, timeout=5)
    assert len(slow.received) <= 1  # one at a time, and the first is still being answered
    assert slow.answers in ([], [None])  # so the fast lane never waited for the slow one
    assert slow.hold is not None
    slow.hold.set()
    await slow.wait_for(3, timeout=6)
    await wait_status(tmp_path / "gateway.db", "delivered", count=6, timeout=3)
    # concurrency 1: each request came only once the one before it had been answered
    assert slow.in_flight_on_arrival == [0, 0, 0]


async def test_a_slow_destination_does_not_take_the_connections_of_another_on_its_host(
    gateway: GatewayClient, tmp_path: Path
) -> None:
    # one server, two paths: /slow answers nothing until released, /fast at once
    release = asyncio.Event()
    slow_in_flight: list[int] = []
    fast_received: list[str] = []

    async def slow(request: web.Request) -> web.Response:
        slow_in_flight.append(1)
        await release.wait()
        return web.Response(text="ok")

    async def fast(request: web.Request) -> web.Response:
        fast_received.append((await request.json())["body"]["eventId"])
        return web.Response(text="ok")

    server = web.Application()
    server.router.add_post("/slow", slow)
    server.router.add_post("/fast", fast)
    runner = web.AppRunner(server)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    try:
        client = await gateway(
            destinations={
                "slow": http(f"{base}/slow", concurrency=64, ordered=False, timeout="30s"),
                "fast": http(f"{base}/fast", ordered=False),
            },
            rules=[
                {"name": "steps", "events": ["Finished Step"], "to": ["slow"]},
                {"name": "journeys", "events": ["Finished Journey"], "to": ["fast"]},
            ],
        )
        for n in range(64):  # the slow lane's 64 workers all wait on the host
            await accept(client, payload("Finished Step", event_id=f"slow-{n}"))
        await async_wait_until(lambda: len(slow_in_flight) == 64, timeout=10)
        for n in range(3):
            await accept(client, payload(event_id=f"fast-{n}"))
        # with one pool of 64 connections per host these waited for the slow lane
        await async_wait_until(lambda: len(fast_received) == 3, timeout=5)
        assert sorted(fast_received) == ["fast-0", "fast-1", "fast-2"]
    finally:
        release.set()
        await runner.cleanup()


async def rate_limited(
    gateway: GatewayClient, make_sink: MakeSink, rate: str, count: int
) -> tuple[Sink, Any]:
    """A sink behind one destination limited to `rate`, and `count` events accepted for it,
    each of its own journey (no ordering holds any back)."""
    sink = await make_sink(default=200)
    client = await gateway(destinations={"svc": http(sink.url, rate_limit=rate)}, rules=to("svc"))
    for n in range(count):
        await accept(client, payload(event_id=f"rate-{n}", journey=f"J-{n}"))
    return sink, client


async def test_rate_limit_spaces_deliveries(
    gateway: GatewayClient, make_sink: MakeSink, tmp_path: Path
) -> None:
    sink, _ = await rate_limited(gateway, make_sink, "5/s", 5)
    received = await sink.wait_for(5, timeout=5)
    # the limiter's guarantee, which no load can break: never closer than 1/rate (less the
    # arrival jitter of two local requests); its exact schedule is tested on an injected
    # clock (test_backoff.py), and an upper bound here would only measure the machine
    gaps = [b.at - a.at for a, b in itertools.pairwise(received)]
    assert all(gap >= 0.18 for gap in gaps), gaps
    assert received[-1].at - received[0].at >= 0.75
    await wait_status(tmp_path / "gateway.db", "delivered", count=5, timeout=3)


async def test_a_reload_that_lifts_a_rate_limit_frees_the_waiting_deliveries(
    gateway: GatewayClient, make_sink: MakeSink, tmp_path: Path
) -> None:
    sink, client = await rate_limited(gateway, make_sink, "1/h", 3)
    await sink.wait_for(1, timeout=5)  # the first slot is now, the next an hour away
    await sink.stays(1, 0.3)
    config_path = tmp_path / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    del config["destinations"]["svc"]["delivery"]["rate_limit"]
    config_path.write_text(yaml.safe_dump(config))
    assert (await client.app[RUNTIME].reload("test")).ok
    # workers asleep on the old spacing wake and send now (they slept for an hour before)
    await sink.wait_for(3, timeout=5)
    await wait_status(tmp_path / "gateway.db", "delivered", count=3, timeout=3)


# ------------------------------------------------------------ a stale read must not resend
# (a regression test: before the engine remembered ids finished during a `due` query, the
# delivery below was sent twice, and the same race duplicated deliveries in the tests above
# now and then)
class SlowReadStore(SqliteStore):
    """The real SQLite store whose due() answers late, as a busy disk or a long read would:
    its result then describes the outbox as it was when the read began."""

    read_delay = 0.25

    async def due(
        self, destination: str, now: float, limit: int, ordered: bool, exclude: Any = ()
    ) -> list[DueDelivery]:
        found = await super().due(destination, now, limit, ordered, exclude)
        await asyncio.sleep(self.read_delay)
        return found


@contextlib.asynccontextmanager
async def engine_on(store: SqliteStore, tmp_path: Path, url: str) -> AsyncIterator[DeliveryEngine]:
    """A real engine over `store`, delivering everything to one http destination at `url`."""
    config = load_config(
        write_config(
            tmp_path, base_config(tmp_path, destinations={"svc": http(url)}, rules=to("svc"))
        )
    )
    await store.open()
    try:
        async with HttpClient() as client:
            engine = DeliveryEngine(
                store,
                destinations=lambda: dict(config.destinations),
                default_policy=lambda: config.delivery,
                client=client,
            )
            engine.start()
            try:
                yield engine
            finally:
                await engine.stop(1.0)
    finally:
        await store.close()


async def test_delivery_finished_during_a_dispatch_read_is_not_sent_again(
    tmp_path: Path, make_sink: MakeSink
) -> None:
    sink = await make_sink(delay=0.2, default=200)
    store = SlowReadStore(tmp_path / "slow.db")
    async with engine_on(store, tmp_path, sink.url) as engine:
        event = parse_event(payload(event_id="once-1"))
        await store.accept(event, [("svc", "all")], ["all"], None, {})
        engine.wake()
        await sink.wait_for(1, timeout=5)
        # a dispatch pass that begins while the attempt is on the wire (new work arriving, a
        # scheduled retry elsewhere, the poll) and ends after it is recorded
        await asyncio.sleep(0.1)
        engine.wake()
        await async_wait_until(
            lambda: [d["status"] for d in deliveries(tmp_path / "slow.db")] == ["delivered"],
            timeout=5,
        )
        await sink.stays(1, 0.8)
    assert attempts(tmp_path / "slow.db") == [(1, "delivered", None, 200)]


class FlakyRecordStore(SqliteStore):
    """The real SQLite store, except that the first `failures` outcome writes fail the way a
    full disk or a long-held lock makes them fail."""

    failures = 3

    async def record(self, records: Any) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("full", "database or disk is full")
        await super().record(records)


async def test_an_outcome_the_store_cannot_take_is_kept_not_resent(
    tmp_path: Path, make_sink: MakeSink
) -> None:
    sink = await make_sink(default=200)
    store = FlakyRecordStore(tmp_path / "flaky.db")
    async with engine_on(store, tmp_path, sink.url) as engine:
        await store.accept(
            parse_event(payload(event_id="kept-1")), [("svc", "all")], ["all"], None, {}
        )
        engine.wake()
        await sink.wait_for(1, timeout=5)
        await async_wait_until(
            lambda: [d["status"] for d in deliveries(tmp_path / "flaky.db")] == ["delivered"],
            timeout=10,
        )
        await sink.stays(1, 0.5)  # sent once, although recording it failed 3 times
    assert attempts(tmp_path / "flaky.db") == [(1, "delivered", None, 200)]


# ------------------------------------------------------------------------------- the CLI
@pytest.mark.slow
async def test_deliveries_show_accepts_json_flag_with_attempt_history(
    gateway: GatewayClient, make_sink: MakeSink, tmp_path: Path
) -> None:
    sink = await make_sink(responses=[503], default=200)
    client = await gateway(destinations={"svc": http(sink.url)}, rules=to("svc"))
    await accept(client, payload(event_id="shown-1"))
    await wait_status(tmp_path / "gateway.db", "delivered", timeout=5)
    delivery_id = deliveries(tmp_path / "gateway.db")[0]["id"]
    shown = await asyncio.to_thread(
        run_cli,
        "deliveries",
        "show",
        "-c",
        str(tmp_path / "config.yaml"),
        str(delivery_id),
        "--json",
    )
    assert shown.returncode == 0, shown.stderr
    history = json.loads(shown.stdout)["attempt_history"]
    assert [(h["number"], h["outcome"], h["status_code"]) for h in history] == [
        (1, "retry", 503),
        (2, "delivered", 200),
    ]


async def test_the_body_sent_is_the_stored_bytes_with_or_without_the_parsed_event(
    tmp_path: Path, make_sink: MakeSink
) -> None:
    """A delivery right after ingest takes the event as parsed then; one after a restart
    reads the stored bytes. The receiver gets the same bytes either way."""
    sink = await make_sink(default=200)
    raws = [payload(event_id=f"bytes-{i}", journeyId=f"j-{i}") for i in range(2)]
    path = tmp_path / "handoff.db"
    store = SqliteStore(path)
    async with engine_on(store, tmp_path, sink.url) as engine:
        await store.accept(parse_event(raws[0]), [("svc", "all")], ["all"], None, {})
        engine.wake()
        await sink.wait_for(1, timeout=5)
    # accepted by one process, delivered by the next: nothing parsed in memory
    seeding = SqliteStore(path)
    await seeding.open()
    await seeding.accept(parse_event(raws[1]), [("svc", "all")], ["all"], None, {})
    await seeding.close()
    async with engine_on(SqliteStore(path), tmp_path, sink.url) as engine:
        engine.wake()
        await sink.wait_for(2, timeout=5)
    assert [r.body for r in sink.received] == raws

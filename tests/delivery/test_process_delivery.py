"""Delivery across real `idwise-gateway serve` processes: kill -9 with a backlog, and the
CLI's `replay` / `deliveries show` beside a running gateway on the same database."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import base_config, write_config
from tests.support.payloads import payload
from tests.support.process import GatewayProcess, post, run_cli
from tests.support.sinks import MakeSink
from tests.support.store import attempts, deliveries, status_counts, statuses, wait_status
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.slow  # real gateway processes


def http(url: str, **delivery: Any) -> dict[str, Any]:
    destination: dict[str, Any] = {"type": "http", "url": url}
    if delivery:
        destination["delivery"] = delivery
    return destination


@asynccontextmanager
async def serving(config: Path) -> AsyncIterator[GatewayProcess]:
    """A real gateway process; started off the event loop so local sinks keep answering."""
    gateway = GatewayProcess(config)
    await asyncio.to_thread(gateway.start)
    try:
        yield gateway
    finally:
        await asyncio.to_thread(gateway.stop)


async def send(gateway: GatewayProcess, raw: bytes) -> None:
    status, answer = await asyncio.to_thread(post, gateway.url, raw)
    assert status == 200, answer
    assert answer["status"] == "accepted"


async def cli(*args: str) -> Any:
    """Run the CLI (off the loop); returns the completed process."""
    done = await asyncio.to_thread(run_cli, *args)
    assert done.returncode == 0, done.stderr
    return done


# ---------------------------------------------------------------------------- kill -9
async def test_kill_9_with_a_backlog_then_restart_delivers_everything(
    tmp_path: Path, make_sink: MakeSink
) -> None:
    sink = await make_sink(default=503)  # down for now: everything piles up as pending
    config = write_config(
        tmp_path,
        base_config(
            tmp_path,
            destinations={"svc": http(sink.url, max_attempts=1000, max_age="1h")},
            rules=[{"name": "all", "to": ["svc"]}],
        ),
    )
    db = tmp_path / "gateway.db"
    sent = [(f"k{n}", f"J{n % 4}") for n in range(20)]

    first = GatewayProcess(config)
    await asyncio.to_thread(first.start)
    try:
        for event_id, journey in sent:
            await send(first, payload(event_id=event_id, journey=journey))

        def all_attempted() -> bool:
            return sum(d["attempts"] >= 1 for d in deliveries(db)) == 4

        # with ordering, the head of each of the 4 journeys is the one being retried
        await async_wait_until(all_attempted, timeout=10, what="every journey's head attempted")
        first.signal(signal.SIGKILL)
        assert await asyncio.to_thread(first.wait, 10) == -signal.SIGKILL
    finally:
        await asyncio.to_thread(first.stop)
    assert status_counts(db) == {"pending": 20}
    assert sink.accepted_ids() == []

    sink.default = 200  # the destination is back
    async with serving(config):
        await wait_status(db, "delivered", count=20, timeout=15)
    delivered = sink.accepted_ids()
    assert sorted(delivered) == sorted(event_id for event_id, _ in sent)  # each exactly once
    for journey in {j for _, j in sent}:
        in_order = [event_id for event_id, j in sent if j == journey]
        assert [i for i in delivered if i in in_order] == in_order, journey


# ----------------------------------------------------------------------------- replay
async def test_replay_dead_requeues_into_the_running_gateway(
    tmp_path: Path, make_sink: MakeSink
) -> None:
    a = await make_sink(responses=[400], default=200)
    b = await make_sink(default=503)
    config = write_config(
        tmp_path,
        base_config(
            tmp_path,
            destinations={"a": http(a.url), "b": http(b.url, max_attempts=2)},
            rules=[{"name": "all", "to": ["a", "b"]}],
        ),
    )
    db = tmp_path / "gateway.db"
    cfg = str(config)
    async with serving(config) as gateway:
        await send(gateway, payload(event_id="dead-1"))
        await wait_status(db, "dead", count=2, timeout=5)
        listed = await cli("deliveries", "list", "-c", cfg, "--status", "dead", "--json")
        assert sorted((r["destination"], r["reason"]) for r in json.loads(listed.stdout)) == [
            ("a", "http_400"),
            ("b", "max_attempts (http_5xx)"),
        ]

        replayed = await cli("replay", "-c", cfg, "--dead", "--destination", "a")
        assert "re-queued 1 " in replayed.stdout
        await wait_status(db, "delivered", destination="a", timeout=5)
        assert statuses(db) == {
            "a": "delivered",
            "b": "dead",
        }
        assert len(b.received) == 2

        # a replayed delivery gets a fresh budget: one more failure is a retry, not death
        b.responses, b.default = [503], 200
        replayed = await cli("replay", "-c", cfg, "--dead")
        assert "re-queued 1 " in replayed.stdout  # only b was still dead
        await wait_status(db, "delivered", count=2, timeout=5)
        await a.stays(2, 0.3)
        assert a.answers == [400, 200]
        assert b.answers == [503, 503, 503, 200]

        delivery_id = deliveries(db, destination="a")[0]["id"]
        shown = json.loads(
            (await cli("deliveries", "show", "-c", cfg, str(delivery_id), "--json")).stdout
        )
        assert shown["status"] == "delivered"
        history = shown["attempt_history"]
        assert [(h["outcome"], h["reason"], h["status_code"]) for h in history] == [
            ("dead", "http_400", 400),
            ("delivered", None, 200),
        ]
        assert all(h["started_at"] and h["duration"] >= 0 for h in history)


async def test_replay_of_a_pending_delivery_makes_it_due_without_duplicating(
    tmp_path: Path, make_sink: MakeSink
) -> None:
    sink = await make_sink(responses=[503], default=200)
    slow_backoff = {"initial": "30s", "max": "30s", "multiplier": 2, "jitter": 0}
    config = write_config(
        tmp_path,
        base_config(
            tmp_path,
            destinations={
                "svc": http(sink.url, backoff=slow_backoff, max_attempts=10, timeout="10s")
            },
            rules=[{"name": "all", "to": ["svc"]}],
        ),
    )
    db = tmp_path / "gateway.db"
    cfg = str(config)
    async with serving(config) as gateway:
        await send(gateway, payload(event_id="pending-1"))
        await async_wait_until(lambda: len(attempts(db)) == 1, timeout=5, what="first attempt")
        (only,) = deliveries(db)
        assert (only["status"], only["attempts"]) == ("pending", 1)
        delivery_id = only["id"]
        release = sink.hold = asyncio.Event()  # the next attempt stays on the wire

        replayed = await cli("replay", "-c", cfg, "--delivery", str(delivery_id))
        assert "re-queued 1 " in replayed.stdout
        # due now instead of in 30 s: the running gateway notices within its poll interval
        await sink.wait_for(2, timeout=3)
        # replayed again while that attempt is in flight: still pending, so it must only be
        # made due, never sent a second time beside the attempt in progress
        assert [d["status"] for d in deliveries(db)] == ["pending"]
        replayed = await cli("replay", "-c", cfg, "--delivery", str(delivery_id))
        assert "re-queued 1 " in replayed.stdout
        await asyncio.sleep(1.2)  # a poll interval with the replayed delivery due and in flight
        assert len(sink.received) == 2
        assert sink.answers == [503, None]
        release.set()
        await wait_status(db, "delivered", timeout=5)
        await sink.stays(2, 1.2)
    assert sink.answers == [503, 200]
    assert len(deliveries(db)) == 1
    assert attempts(db) == [(1, "retry", "http_5xx", 503), (2, "delivered", None, 200)]


async def test_replay_event_sends_that_event_again_and_nothing_else(
    tmp_path: Path, make_sink: MakeSink
) -> None:
    sink = await make_sink(default=200)
    config = write_config(
        tmp_path,
        base_config(
            tmp_path,
            destinations={"svc": http(sink.url)},
            rules=[{"name": "all", "to": ["svc"]}],
        ),
    )
    db = tmp_path / "gateway.db"
    async with serving(config) as gateway:
        await send(gateway, payload(event_id="again-1", journey="J1"))
        await send(gateway, payload(event_id="again-2", journey="J2"))
        await wait_status(db, "delivered", count=2, timeout=5)
        replayed = await cli("replay", "-c", str(config), "--event-id", "again-1")
        assert "re-queued 1 " in replayed.stdout
        await sink.wait_for(3, timeout=5)
        await wait_status(db, "delivered", count=2, timeout=5)
        await sink.stays(3, 1.2)
    assert sorted(sink.accepted_ids()) == ["again-1", "again-1", "again-2"]
    assert sink.ids()[-1] == "again-1"


async def test_reroute_backfills_a_new_destination_only(
    tmp_path: Path, make_sink: MakeSink
) -> None:
    old = await make_sink(default=200)
    new = await make_sink(default=200)
    document = base_config(
        tmp_path,
        destinations={"old": http(old.url)},
        rules=[{"name": "to-old", "to": ["old"]}],
    )
    config = write_config(tmp_path, document)
    db = tmp_path / "gateway.db"
    cfg = str(config)
    async with serving(config) as gateway:
        await send(gateway, payload(event_id="rr-1", journey="J1"))
        await send(gateway, payload(event_id="rr-2", journey="J2"))
        await wait_status(db, "delivered", count=2, timeout=5)

        document["destinations"]["new"] = http(new.url)
        document["rules"].append({"name": "to-new", "to": ["new"]})
        write_config(tmp_path, document)
        gateway.signal(signal.SIGHUP)  # the running gateway learns the new destination
        await async_wait_until(lambda: gateway.logged("config reloaded"), timeout=10, what="reload")

        rerouted = await cli("replay", "-c", cfg, "--reroute", "--since", "1h")
        assert "rerouted 2 event(s): 2 new delivery(ies) queued" in rerouted.stdout
        await wait_status(db, "delivered", count=4, timeout=5)
        again = await cli("replay", "-c", cfg, "--reroute", "--since", "1h")
        assert "0 new delivery(ies)" in again.stdout  # nothing left to backfill
        await new.stays(2, 1.2)
    assert sorted(new.accepted_ids()) == ["rr-1", "rr-2"]
    assert sorted(old.accepted_ids()) == ["rr-1", "rr-2"]  # not sent again
    assert [
        (d["destination"], d["rule"], d["status"])
        for d in sorted(deliveries(db), key=lambda d: (d["destination"], d["event_row"]))
    ] == [
        ("new", "to-new", "delivered"),
        ("new", "to-new", "delivered"),
        ("old", "to-old", "delivered"),
        ("old", "to-old", "delivered"),
    ]

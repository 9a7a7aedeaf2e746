"""Several real gateway processes on one real PostgreSQL database, under load and faults:
replicas killed with SIGKILL at random moments, the database stopped and restarted, a
replica frozen past its lease, one eventId posted to every replica at once.

The promises under test: a 200 means stored (whichever replica answered); every stored
delivery reaches its destination; no delivery is ever on the wire from two replicas at once
(the sink records any arrival of an Idempotency-Key while an earlier one is still being
answered); an outcome from a replica that lost its claim is refused. Set FAULT_SEED to
replay a run's random kill moments.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from tests.support.config import base_config, write_config
from tests.support.load import Load
from tests.support.payloads import payload
from tests.support.postgres import PASSWORD, PostgresServer, make_server, remove_server
from tests.support.process import GatewayProcess, get, post
from tests.support.raw_http import exchange, request_bytes
from tests.support.sinks import Received, Sink, SinkLoop
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

FAST = {
    "max_attempts": 1000,
    "backoff": {"initial": "20ms", "max": "150ms", "multiplier": 2, "jitter": 0.1},
    "timeout": "2s",
    "max_age": "1h",
}


@dataclass
class OverlapSink(Sink):
    """A Sink that holds each answer `hold` seconds (`first_hold` for the very first
    request) and records deliveries that arrive while an earlier arrival of the same
    Idempotency-Key is still being answered."""

    hold: float = 0.02
    first_hold: float | None = None
    active: dict[str, int] = field(default_factory=dict)
    overlaps: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        key = request.path + " " + request.headers.get("Idempotency-Key", "")
        if self.active.get(key):
            self.overlaps.append(key)
        self.active[key] = self.active.get(key, 0) + 1
        received = Received(request.path, dict(request.headers), body, time.time())
        first = not self.received
        self.received.append(received)
        self.arrived.set()
        try:
            await asyncio.sleep(self.first_hold if first and self.first_hold else self.hold)
        finally:
            self.active[key] -= 1
        self.answered.append((received, 200))
        return web.Response(text="ok")


def start_sink(sinks: SinkLoop, **kwargs: Any) -> OverlapSink:
    async def make() -> OverlapSink:  # on the sinks' loop, which its Event belongs to
        return await OverlapSink(**kwargs).start()

    sink: OverlapSink = sinks.run(make())
    sinks.sinks.append(sink)
    return sink


def replica_config(
    tmp_path: Path, name: str, url: str, lease_margin: str = "2s", **delivery: Any
) -> Path:
    """One replica's config; the DSN comes from $DATABASE_URL, as in production."""
    config = base_config(
        tmp_path,
        server={"shutdown_grace": "2s"},
        storage={
            "backend": "postgres",
            "dsn": "${DATABASE_URL}",
            "pool": {"min": 1, "max": 4},
            "lease_margin": lease_margin,
            "connect_timeout": "10s",
        },
        delivery={**FAST, **delivery},
        destinations={"a": {"type": "http", "url": url}},
        rules=[{"name": "all-to-a", "to": ["a"]}],
    )
    return write_config(tmp_path, config, name=f"{name}.yaml")


@contextlib.contextmanager
def cluster(
    tmp_path: Path, dsn: str, url: str, count: int, **settings: Any
) -> Iterator[list[GatewayProcess]]:
    env = {"DATABASE_URL": dsn}
    paths = [replica_config(tmp_path, f"replica-{n}", url, **settings) for n in range(count)]
    replicas = [GatewayProcess(path, env=env).start() for path in paths]
    try:
        yield replicas
    finally:
        for replica in replicas:
            with contextlib.suppress(ProcessLookupError):
                replica.signal(signal.SIGCONT)
            replica.stop()
        for replica in replicas:
            assert PASSWORD not in replica.logs()


def query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows
        finally:
            await conn.close()

    return asyncio.run(run())


def stored_keys(dsn: str) -> set[str]:
    return {r["dedupe_key"] for r in query(dsn, "SELECT dedupe_key FROM events")}


def assert_all_delivered(dsn: str, sink: OverlapSink, timeout: float = 60.0) -> None:
    def missing() -> set[str]:
        return stored_keys(dsn) - set(sink.delivered("a"))

    try:
        wait_until(lambda: not missing(), timeout, "every stored event delivered")
    except AssertionError:
        statuses = query(dsn, "SELECT status, count(*) FROM deliveries GROUP BY status")
        raise AssertionError(
            f"undelivered {len(missing())}, e.g. {sorted(missing())[:5]}; {statuses}"
        ) from None


# ------------------------------------------------------------------------------ SIGKILL
@pytest.mark.parametrize("count", [2, 3])
def test_replicas_killed_at_random_moments_lose_nothing_and_never_send_together(
    count: int, tmp_path: Path, sinks: SinkLoop, postgres_dsn: str
) -> None:
    seed = int(os.environ.get("FAULT_SEED") or time.time_ns() % 1_000_000)
    rng = random.Random(seed)
    sink = start_sink(sinks, hold=0.03)

    def choose_for(replica: int) -> Any:
        def choose(worker: int, n: int) -> tuple[str, str, dict[str, Any]]:
            journey = f"j-{replica}-{worker}-{n % 5}"
            return "Finished Journey", f"r{replica}-{worker}-{n}", {"journeyId": journey}

        return choose

    with cluster(tmp_path, postgres_dsn, sink.url_for("a"), count) as replicas:
        loads = [Load(r.url, choose_for(i), workers=2, timeout=5) for i, r in enumerate(replicas)]
        kills = []
        for load in loads:
            load.__enter__()
        try:
            for _ in range(2 * count):
                time.sleep(rng.uniform(0.3, 1.0))
                victim = rng.randrange(count)
                kills.append(victim)
                replicas[victim].stop()  # SIGKILL
                time.sleep(rng.uniform(0.0, 0.3))
                replicas[victim] = GatewayProcess(
                    replicas[victim].config_path, env=replicas[victim].env
                ).start()
            loads[0].wait_for(20)
        finally:
            for load in loads:
                load.stop()
        accepted = set().union(*(load.accepted() for load in loads))
        note = f"(FAULT_SEED={seed}, killed {kills}) "
        assert len(accepted) > 40, note + str([load.statuses() for load in loads])
        for load in loads:
            assert {o.status for o in load.outcomes} <= {200, None}, note + str(load.statuses())
        lost = accepted - stored_keys(postgres_dsn)
        assert not lost, f"{note}answered 200 but not stored: {sorted(lost)[:5]}"
        assert_all_delivered(postgres_dsn, sink)
        assert sink.overlaps == [], note + f"sent by two replicas at once: {sink.overlaps[:5]}"
        dead = query(postgres_dsn, "SELECT count(*) AS n FROM deliveries WHERE status = 'dead'")
        assert dead[0]["n"] == 0


# ------------------------------------------------------------- the database goes away
@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of this test's own: it is stopped and started again."""
    server = make_server().start()
    yield server
    remove_server(server)


def test_postgres_restarted_under_load_only_503s_while_down_then_nothing_lost(
    tmp_path: Path, sinks: SinkLoop, own_server: PostgresServer
) -> None:
    dsn = own_server.create_database()
    sink = start_sink(sinks, hold=0.01)

    def choose(worker: int, n: int) -> tuple[str, str, dict[str, Any]]:
        return "Finished Journey", f"pg-{worker}-{n}", {"journeyId": f"j-{worker}-{n % 5}"}

    with cluster(tmp_path, dsn, sink.url_for("a"), 2) as replicas:
        with Load(replicas[0].url, choose, workers=3, timeout=15, pause=0.01) as load:
            load.wait_for(30)
            own_server.stop()
            down_at = time.monotonic()
            for replica in replicas:
                wait_until(
                    lambda r=replica: get(r.base + "/readyz")[0] == 503, 15, "readyz 503 while down"
                )
                assert get(replica.base + "/healthz")[0] == 200
                port = replica.config["server"]["port"]
                body = payload("Finished Journey", event_id=f"while-down-{port}")
                answer = exchange(port, request_bytes(body))
                assert answer is not None and answer.status == 503
                assert int(answer.headers["retry-after"]) > 0  # IDWise retries later
            load.wait_for(10)  # requests keep coming while it is down
            up_at = time.monotonic()
            own_server.start()
            for replica in replicas:
                wait_until(lambda r=replica: get(r.base + "/readyz")[0] == 200, 30, "readyz again")
            start = len(load.outcomes)
            wait_until(
                lambda: any(o.status == 200 for o in load.outcomes[start:]), 30, "200s again"
            )
        statuses = {o.status for o in load.outcomes}
        assert statuses <= {200, 503}, load.statuses()
        acknowledged_while_down = [
            o
            for o in load.outcomes
            if o.status == 200 and o.sent_at > down_at and o.done_at < up_at
        ]
        assert acknowledged_while_down == []
        assert any(o.status == 503 for o in load.outcomes), load.statuses()
        lost = load.accepted() - stored_keys(dsn)
        assert not lost, f"answered 200 but not stored: {sorted(lost)[:5]}"
        assert_all_delivered(dsn, sink)
        assert sink.overlaps == []


# --------------------------------------------------------- a replica frozen past its lease
def test_a_replica_frozen_past_its_lease_cannot_record_its_late_outcome(
    tmp_path: Path, sinks: SinkLoop, postgres_dsn: str
) -> None:
    # the first send is answered after 2 s: its replica is frozen meanwhile, for longer
    # than its lease (timeout 3 s + margin 1 s), so the other replica takes the delivery over
    sink = start_sink(sinks, hold=0.0, first_hold=2.0)
    with cluster(
        tmp_path, postgres_dsn, sink.url_for("a"), 2, lease_margin="1s", timeout="3s"
    ) as replicas:
        status, answer = post(replicas[0].url, payload("Finished Journey", event_id="frozen-1"))
        assert (status, answer["status"]) == (200, "accepted")
        wait_until(lambda: len(sink.received) == 1, 15, "the first send")
        (owner,) = query(postgres_dsn, "SELECT claim_owner FROM deliveries")
        pids = {str(r.process.pid): r for r in replicas if r.process}
        frozen = pids[owner["claim_owner"].split(":")[1]]
        other = next(r for r in replicas if r is not frozen)
        frozen.signal(signal.SIGSTOP)
        try:
            wait_until(lambda: len(sink.received) == 2, 30, "the other replica's send")
            wait_until(
                lambda: (
                    query(postgres_dsn, "SELECT status FROM deliveries")[0]["status"] == "delivered"
                ),
                15,
                "delivered by the other replica",
            )
        finally:
            frozen.signal(signal.SIGCONT)
        wait_until(lambda: bool(frozen.logged("delivery outcomes refused")), 20, "refusal logged")
        history = query(postgres_dsn, "SELECT outcome, claim_owner FROM attempts")
        assert len(history) == 1, history  # recorded once, by the replica holding the claim
        assert history[0]["outcome"] == "delivered"
        assert history[0]["claim_owner"].split(":")[1] == str(other.process and other.process.pid)
        assert sink.overlaps == []


# ------------------------------------------------------------- one event, every replica
def test_one_event_posted_to_every_replica_at_once_is_stored_once(
    tmp_path: Path, sinks: SinkLoop, postgres_dsn: str
) -> None:
    sink = start_sink(sinks)
    body = payload("Finished Journey", event_id="same-everywhere")
    with cluster(tmp_path, postgres_dsn, sink.url_for("a"), 3) as replicas:
        barrier = threading.Barrier(30)

        def send(n: int) -> tuple[int, Any]:
            barrier.wait(10)
            return post(replicas[n % 3].url, body)

        with ThreadPoolExecutor(30) as pool:
            answers = list(pool.map(send, range(30)))
        assert [status for status, _ in answers] == [200] * 30
        assert sorted(a["status"] for _, a in answers).count("accepted") == 1
        assert {a["eventId"] for _, a in answers} == {"same-everywhere"}
        assert query(postgres_dsn, "SELECT count(*) AS n FROM events")[0]["n"] == 1
        assert query(postgres_dsn, "SELECT count(*) AS n FROM deliveries")[0]["n"] == 1
        wait_until(lambda: sink.delivered("a") == ["same-everywhere"], 15, "one delivery")
        time.sleep(0.5)
        assert sink.delivered("a") == ["same-everywhere"]

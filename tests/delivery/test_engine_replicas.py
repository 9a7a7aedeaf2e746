"""Two delivery engines (two replicas) on one real PostgreSQL database, in one process so the
test can watch both: every delivery sent once and never by both at once, journey order and
the rate limit hold for the pair, and a replica that stops hands its claims over at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.config.load import load_config
from gateway.delivery import DeliveryEngine
from gateway.destinations.client import HttpClient
from gateway.events import parse_event
from gateway.store.postgres import PostgresStore
from tests.store.conftest import postgres_store
from tests.support.config import base_config, write_config
from tests.support.payloads import payload
from tests.support.sinks import Received, Sink


@dataclass
class OverlapSink(Sink):
    """Records every arrival and any delivery (Idempotency-Key) that arrives while an earlier
    arrival of it is still being answered: a send by two replicas at once."""

    hold: float = 0.05
    active: dict[str, int] = field(default_factory=dict)
    overlaps: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        key = request.headers.get("Idempotency-Key", "")
        if self.active.get(key):
            self.overlaps.append(key)
        self.active[key] = self.active.get(key, 0) + 1
        self.received.append(Received(request.path, dict(request.headers), body, time.time()))
        self.arrived.set()
        try:
            await asyncio.sleep(self.hold)
        finally:
            self.active[key] -= 1
        return web.Response(text="ok")


@contextlib.asynccontextmanager
async def replicas(
    tmp_path: Path, dsn: str, url: str, count: int = 2, lease_margin: float = 5.0, **delivery: Any
) -> AsyncIterator[list[tuple[PostgresStore, DeliveryEngine]]]:
    destination: dict[str, Any] = {"type": "http", "url": url}
    if delivery:
        destination["delivery"] = delivery
    config = load_config(
        write_config(
            tmp_path,
            base_config(
                tmp_path,
                storage={"backend": "postgres", "dsn": dsn},
                destinations={"svc": destination},
                rules=[{"name": "all", "to": ["svc"]}],
            ),
        )
    )
    running: list[tuple[PostgresStore, DeliveryEngine]] = []
    async with HttpClient() as client:
        try:
            for _ in range(count):
                store = postgres_store(dsn, lease_margin=lease_margin)
                await store.open()
                engine = DeliveryEngine(
                    store,
                    destinations=lambda: dict(config.destinations),
                    default_policy=lambda: config.delivery,
                    client=client,
                )
                store.listen(engine.wake)
                engine.start()
                running.append((store, engine))
            yield running
        finally:
            for store, engine in running:
                await engine.stop(1.0)
                await store.close()


async def sink(**kwargs: Any) -> OverlapSink:
    return await OverlapSink(**kwargs).start()  # type: ignore[return-value]


async def statuses(store: PostgresStore) -> list[str]:
    return [d["status"] for d in await store.list_deliveries(limit=1000)]


async def until(predicate: Any, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_two_replicas_send_every_delivery_once_and_never_together(
    tmp_path: Path, postgres_dsn: str
) -> None:
    server = await sink(hold=0.02)
    try:
        async with replicas(tmp_path, postgres_dsn, server.url, concurrency=8) as pair:
            stores = [store for store, _ in pair]
            for i in range(120):
                event = parse_event(payload(event_id=f"once-{i}", journey=f"j-{i % 30}"))
                await stores[i % 2].accept(event, [("svc", "all")], ["all"], None, {})

            async def all_delivered() -> bool:
                return (await statuses(stores[0])).count("delivered") == 120

            await until(all_delivered)
        keys = [r.headers["Idempotency-Key"] for r in server.received]
        assert sorted(keys) == sorted(f"once-{i}" for i in range(120))
        assert server.overlaps == []
        # journey order: within each journey, arrivals follow acceptance order
        for journey in range(30):
            mine = [int(k.split("-")[1]) for k in keys if int(k.split("-")[1]) % 30 == journey]
            assert mine == sorted(mine)
    finally:
        await server.stop()


async def test_a_rate_limit_holds_for_the_cluster(tmp_path: Path, postgres_dsn: str) -> None:
    server = await sink(hold=0.0)
    try:
        # concurrency 1: a lane holds at most 8 claims, so with 16 due both replicas send
        async with replicas(
            tmp_path, postgres_dsn, server.url, rate_limit="5/s", concurrency=1, ordered=False
        ) as pair:
            stores = [store for store, _ in pair]
            for i in range(16):
                event = parse_event(payload(event_id=f"rate-{i}", journey=f"r-{i}"))
                await stores[i % 2].accept(event, [("svc", "all")], ["all"], None, {})
            await server.wait_for(16, timeout=30)
            owners = await stores[0].fetch("SELECT DISTINCT claim_owner FROM attempts")
        assert len(owners) == 2  # both replicas sent
        times = sorted(r.at for r in server.received)
        # 16 sends at 5/s for the pair, not for each: at least 15 intervals of 0.2 s between
        # the first and the last (a lower bound only: a slow machine only adds to it)
        assert times[-1] - times[0] >= 15 * 0.2 * 0.9
    finally:
        await server.stop()


async def test_a_stopping_replica_hands_its_claims_over(tmp_path: Path, postgres_dsn: str) -> None:
    server = await sink(hold=0.0)
    try:
        async with replicas(
            tmp_path, postgres_dsn, server.url, count=1, lease_margin=600,
            rate_limit="1/s", ordered=False,
        ) as (first,):  # fmt: skip
            store, _ = first
            for i in range(5):
                event = parse_event(payload(event_id=f"hand-{i}", journey=f"h-{i}"))
                await store.accept(event, [("svc", "all")], ["all"], None, {})
            await server.wait_for(1, timeout=10)
        # stopped with claimed deliveries still queued: released, so another replica sends
        # them now instead of after their ten-minute lease
        async with replicas(tmp_path, postgres_dsn, server.url, count=1):
            await server.wait_for(5, timeout=60)
    finally:
        await server.stop()

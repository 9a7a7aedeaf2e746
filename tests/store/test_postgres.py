"""What only the PostgreSQL backend promises, on a real server: several stores (replicas)
on one database claim each delivery once, fence late outcomes, keep journey order and the
rate limit between them, hear each other's commits, and refuse a newer schema."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from gateway.errors import StoreError
from gateway.store import AttemptRecord
from gateway.store.postgres import MIGRATIONS, PostgresStore
from tests.store.conftest import postgres_store
from tests.store.test_contract import accept, delivered, event
from tests.support.postgres import PASSWORD

Replicas = Callable[..., Awaitable[PostgresStore]]


@pytest.fixture
async def replica(postgres_dsn: str) -> AsyncIterator[Replicas]:
    opened: list[PostgresStore] = []

    async def make(lease_margin: float = 30.0) -> PostgresStore:
        store = postgres_store(postgres_dsn, lease_margin)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


async def test_concurrent_claims_from_two_replicas_never_overlap(replica: Replicas) -> None:
    a, b = await replica(), await replica()
    for i in range(40):
        await accept(a, f"c-{i}", journey=f"j-{i}")
    now = time.time() + 1
    claimed = await asyncio.gather(*(s.due("svc", now, 7, True) for s in (a, b, a, b)))
    ids = [d.id for batch in claimed for d in batch]
    assert len(ids) == len(set(ids)) == 28
    assert len({d.claim for batch in claimed for d in batch}) == 28  # one token per claim


async def test_a_late_outcome_from_an_overtaken_replica_is_refused(replica: Replicas) -> None:
    a, b = await replica(lease_margin=0.5), await replica()
    await accept(a, "fence-1")
    (first,) = await a.due("svc", time.time() + 1, 10, True, attempt_timeout=0.5)
    assert await b.due("svc", time.time() + 1, 10, True) == []  # a's lease is live
    await asyncio.sleep(1.2)
    (second,) = await b.due("svc", time.time() + 1, 10, True)
    assert second.id == first.id and second.claim > first.claim
    assert await a.extend_leases([(first.id, first.claim)], 30) == {first.id}
    assert await b.record([delivered(second.id, claim=second.claim)]) == set()
    assert await a.record([delivered(first.id, claim=first.claim)]) == {first.id}
    shown = await a.get_delivery(first.id)
    assert shown is not None and shown["status"] == "delivered"
    assert len(shown["attempt_history"]) == 1  # recorded once, by the claim holder


async def test_an_extended_lease_keeps_the_claim(replica: Replicas) -> None:
    a, b = await replica(lease_margin=0.5), await replica()
    await accept(a, "keep-1")
    (job,) = await a.due("svc", time.time() + 1, 10, True, attempt_timeout=0.5)
    assert await a.extend_leases([(job.id, job.claim)], 30) == set()
    await asyncio.sleep(1.2)
    assert await b.due("svc", time.time() + 1, 10, True) == []
    await a.release([(job.id, job.claim)])
    assert [d.id for d in await b.due("svc", time.time() + 1, 10, True)] == [job.id]


async def test_journey_order_holds_across_replicas(replica: Replicas) -> None:
    a, b = await replica(), await replica()
    for i in range(3):
        await accept(a, f"ord-{i}", journey="j-same")
    now = time.time() + 1
    (head,) = await a.due("svc", now, 10, True)
    assert await b.due("svc", now, 10, True) == []  # the journey's head is in flight on a
    await a.record([delivered(head.id, claim=head.claim)])
    (nxt,) = await b.due("svc", now, 10, True)
    assert nxt.id > head.id


async def test_a_retry_outcome_releases_the_claim_for_the_next_attempt(replica: Replicas) -> None:
    a, b = await replica(), await replica()
    await accept(a, "rt-1")
    (job,) = await a.due("svc", time.time() + 1, 10, True)
    retry = AttemptRecord(
        job.id, 1, time.time(), 0.1, "retry", reason="http_503", next_attempt_at=time.time(),
        claim=job.claim,
    )  # fmt: skip
    assert await a.record([retry]) == set()
    (again,) = await b.due("svc", time.time() + 1, 10, True)
    assert again.attempts == 1


async def test_rate_slots_are_shared_between_replicas(replica: Replicas) -> None:
    a, b = await replica(), await replica()
    waits = [await store.reserve_rate_slot("slack", 10.0) for store in (a, b, a, b)]
    # each reservation is one interval after the previous one, whoever makes it
    assert waits[0] == 0.0
    assert all(8.0 < later - earlier < 12.0 for earlier, later in itertools.pairwise(waits))


async def test_a_changed_rate_drops_the_slots_booked_at_the_old_spacing(
    replica: Replicas,
) -> None:
    a, b = await replica(), await replica()
    for store in (a, b, a):
        await store.reserve_rate_slot("slack", 3600.0)  # 1/h: booked hours ahead
    assert await b.reserve_rate_slot("slack", 3600.0) > 7000.0
    # a reload made it 1/s: the new spacing counts from now, for every replica
    assert await a.reserve_rate_slot("slack", 1.0, restart=True) < 0.5
    assert 0.5 < await b.reserve_rate_slot("slack", 1.0) < 1.5


async def test_a_commit_on_one_replica_wakes_the_others(replica: Replicas) -> None:
    a, b = await replica(), await replica()
    heard = asyncio.Event()
    names: list[str] = []

    def wake(destinations: object) -> None:
        names.extend(destinations or ())  # type: ignore[call-overload]
        heard.set()

    b.listen(wake)
    await asyncio.sleep(0.2)  # the listener connection is up
    await accept(a, "n-1", "slack", "api")
    await asyncio.wait_for(heard.wait(), 10)
    assert {"slack", "api"} <= set(names)


async def test_a_newer_schema_is_refused_with_a_clear_message(postgres_dsn: str) -> None:
    store = postgres_store(postgres_dsn)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(postgres_dsn)
    await conn.execute(
        "UPDATE meta SET value = $1 WHERE key = 'schema_version'", str(len(MIGRATIONS) + 1)
    )
    await conn.close()
    with pytest.raises(StoreError) as caught:
        await postgres_store(postgres_dsn).open()
    assert caught.value.reason == "schema_too_new"
    assert "newer than this gateway" in str(caught.value)


async def test_replicas_starting_together_migrate_once(postgres_dsn: str) -> None:
    stores = [postgres_store(postgres_dsn) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    assert await stores[0].list_events() == []
    for s in stores:
        await s.close()


async def test_an_unreachable_database_is_a_store_error_without_the_password() -> None:
    from tests.support.config import free_port

    dsn = f"postgresql://gateway:{PASSWORD}@127.0.0.1:{free_port()}/postgres"
    store = PostgresStore(dsn, pool_min=1, pool_max=2, connect_timeout=0.5)
    with pytest.raises(StoreError) as caught:
        await store.open()
    assert caught.value.reason == "unavailable"
    assert PASSWORD not in str(caught.value) and PASSWORD not in repr(caught.value)


async def test_wrong_credentials_are_named_without_the_password(postgres_server: object) -> None:
    from tests.support.postgres import PostgresServer

    assert isinstance(postgres_server, PostgresServer)
    dsn = postgres_server.dsn().replace(PASSWORD, "wrong-password-123")
    with pytest.raises(StoreError) as caught:
        await PostgresStore(dsn, connect_timeout=1).open()
    assert caught.value.reason == "auth"
    assert "wrong-password-123" not in str(caught.value)


async def test_retention_never_prunes_an_event_a_replay_is_requeueing(
    replica: Replicas, postgres_dsn: str
) -> None:
    store = await replica()
    old = time.time() - 7200
    await store.accept(event("old-1"), [("svc", "r")], ["r"], None, {}, old)
    (due,) = await store.due("svc", time.time() + 1, 10, True)
    await store.record([delivered(due.id, claim=due.claim)])
    # another process replays it, and has not committed yet when retention runs
    conn = await asyncpg.connect(postgres_dsn)
    try:
        replay = conn.transaction()
        await replay.start()
        await conn.execute("UPDATE deliveries SET status = 'pending' WHERE id = $1", due.id)
        pruning = asyncio.create_task(store.prune(time.time() - 3600))
        await asyncio.sleep(0.5)  # retention now waits for the replay's row lock
        await replay.commit()
        assert await pruning == 0
    finally:
        await conn.close()
    assert [e["dedupe_key"] for e in await store.list_events()] == ["old-1"]

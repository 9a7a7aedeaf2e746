"""The store on real SQLite files: migrations, expiry, replay, group-commit isolation.

The migration tests read and write the schema with raw SQL on purpose: the schema is what
they are about. Everything else goes through the store's own methods."""

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from gateway.config.load import load_config
from gateway.errors import StoreError
from gateway.events import parse_event
from gateway.store import AttemptRecord, create_store
from gateway.store.recent import RecentEvents
from gateway.store.sqlite import MIGRATIONS, SqliteStore
from gateway.store.sqlite.writer import MAX_BATCH, GroupCommitWriter
from tests.support.config import base_config, write_config
from tests.support.payloads import payload
from tests.support.store import stored_keys


def event(event_id: str, journey: str = "j-1") -> bytes:
    return payload(event_id=event_id, journey=journey)


async def opened(path: Path) -> SqliteStore:
    store = SqliteStore(path, busy_timeout=0.3)
    await store.open()
    return store


async def test_a_new_database_gets_every_migration(tmp_path: Path) -> None:
    store = await opened(tmp_path / "new.db")
    await store.close()
    conn = sqlite3.connect(tmp_path / "new.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    columns = {row[1] for row in conn.execute("PRAGMA table_info(deliveries)")}
    assert "attempt_base" in columns


async def test_an_old_database_is_migrated_in_place_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version=1")
    conn.execute(
        "INSERT INTO events (dedupe_key, event_type, received_at, raw) VALUES ('old-1', 'X', 1, x'7b7d')"
    )
    conn.execute(
        "INSERT INTO deliveries (event_row, destination, queued_at, next_attempt_at, updated_at)"
        " VALUES (1, 'svc', 1, 1, 1)"
    )
    conn.close()
    store = await opened(path)
    try:
        rows = await store.list_deliveries()
        assert [(r["dedupe_key"], r["status"]) for r in rows] == [("old-1", "pending")]
    finally:
        await store.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    sqlite3.connect(path).execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError) as caught:
        await opened(path)
    assert caught.value.reason == "schema_too_new"


async def test_expiry_uses_each_destinations_max_age_and_skips_in_flight(tmp_path: Path) -> None:
    store = await opened(tmp_path / "x.db")
    try:
        old = time.time() - 7200
        for i, destination in enumerate(["short", "short", "long", "removed"]):
            await store.accept(
                parse_event(event(f"e-{i}", journey=f"j-{i}")),
                [(destination, "r")],
                ["r"],
                None,
                {},
                received_at=old,
            )
        in_flight = {r["id"] for r in await store.list_deliveries(destination="short")}
        keep = min(in_flight)
        expired = await store.expire(
            {"short": 3600, "long": 86400}, 60, time.time(), in_flight={keep}
        )
        assert expired == {"short": 1, "removed": 1}
        status = {
            r["id"]: (r["destination"], r["status"], r["reason"])
            for r in await store.list_deliveries()
        }
        assert status[keep] == ("short", "pending", None)
        assert sorted(v for k, v in status.items() if k != keep) == [
            ("long", "pending", None),
            ("removed", "dead", "max_age"),
            ("short", "dead", "max_age"),
        ]
    finally:
        await store.close()


async def test_one_failing_job_does_not_sink_its_batch(tmp_path: Path) -> None:
    store = await opened(tmp_path / "b.db")
    try:

        def broken(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO no_such_table VALUES (1)")

        results = await asyncio.gather(
            store.accept(parse_event(event("ok-1")), [("svc", "r")], ["r"], None, {}),
            store.write(broken),
            store.accept(parse_event(event("ok-2")), [("svc", "r")], ["r"], None, {}),
            return_exceptions=True,
        )
        assert [getattr(r, "status", None) for r in results] == ["accepted", None, "accepted"]
        assert isinstance(results[1], StoreError)
        keys = {r["dedupe_key"] for r in await store.list_events()}
        assert keys == {"ok-1", "ok-2"}
        assert len(await store.list_deliveries()) == 2  # each event kept its delivery
    finally:
        await store.close()


async def test_accepts_of_one_batch_keep_duplicates_and_failures_to_themselves(
    tmp_path: Path,
) -> None:
    store = await opened(tmp_path / "d.db")
    try:
        first = await store.accept(parse_event(event("stored")), [("svc", "r")], ["r"], None, {})

        def accept(key: str, routes: list[tuple[str, str | None]]) -> "asyncio.Future[object]":
            return asyncio.ensure_future(
                store.accept(parse_event(event(key)), routes, ["r"], None, {"X-Request-Id": key})
            )

        # submitted in one go, so the writer takes them as one batch (or a few)
        results = await asyncio.gather(
            accept("new-1", [("svc", "r"), ("other", None)]),
            accept("stored", [("svc", "r")]),
            accept("new-1", [("svc", "r")]),
            accept("broken", [("svc", "r"), ("svc", "r")]),  # the same delivery twice: fails
            accept("new-2", [("svc", "r")]),
            return_exceptions=True,
        )
        statuses = [getattr(r, "status", None) for r in results]
        assert statuses == ["accepted", "duplicate", "duplicate", None, "accepted"]
        assert isinstance(results[3], StoreError)
        new_1, stored, again = results[0], results[1], results[2]
        assert getattr(stored, "event_row", None) == first.event_row
        assert getattr(again, "event_row", None) == getattr(new_1, "event_row", None)
        assert len(getattr(new_1, "delivery_ids", ())) == 2
        events = {r["dedupe_key"]: r for r in await store.list_events()}
        assert set(events) == {"stored", "new-1", "new-2"}
        deliveries = await store.list_deliveries()
        assert len(deliveries) == 4
        assert {r["id"] for r in deliveries} >= set(getattr(new_1, "delivery_ids", ()))
    finally:
        await store.close()


async def test_replay_requeues_dead_and_never_duplicates_pending(tmp_path: Path) -> None:
    store = await opened(tmp_path / "r.db")
    try:
        await store.accept(parse_event(event("r-1")), [("svc", "r")], ["r"], None, {})
        (delivery,) = await store.list_deliveries()
        assert await store.replay(delivery_id=delivery["id"]) == 1  # pending: made due now
        assert len(await store.list_deliveries()) == 1
        # five attempts, the last one dead
        await store.record([AttemptRecord(delivery["id"], 5, time.time(), 0.0, "dead", reason="x")])
        assert await store.replay(dead=True) == 1
        (row,) = await store.list_deliveries()
        assert (row["status"], row["attempts"], row["reason"]) == ("pending", 5, None)
        (due,) = await store.due("svc", time.time() + 1, 10, ordered=True)
        assert due.attempt_base == 5  # a fresh budget; attempt numbers keep counting
    finally:
        await store.close()


async def test_requeue_says_what_it_queued_and_keeps_the_first_queued_time(
    tmp_path: Path,
) -> None:
    store = await opened(tmp_path / "q.db")
    try:
        await store.accept(parse_event(event("q-1")), [("a", "r"), ("b", "r")], ["r"], None, {})
        before = {d["destination"]: d for d in await store.list_deliveries()}
        assert {d["first_queued_at"] for d in before.values()} == {None}
        await store.write(lambda conn: conn.execute("UPDATE deliveries SET status='dead'"))
        requeued = await store.requeue(dead=True, destination="b")
        assert [(r.event_row, r.destination) for r in requeued] == [(1, "b")]
        after = {d["destination"]: d for d in await store.list_deliveries()}
        assert after["b"]["first_queued_at"] == before["b"]["queued_at"]
        assert after["b"]["queued_at"] >= before["b"]["queued_at"]  # max_age counts anew
        assert after["a"]["first_queued_at"] is None
        # replayed again: the first time stays the first
        await store.write(lambda conn: conn.execute("UPDATE deliveries SET status='dead'"))
        (again,) = await store.requeue(delivery_id=after["b"]["id"])
        assert again.delivery_id == after["b"]["id"]
        (row,) = [d for d in await store.list_deliveries() if d["destination"] == "b"]
        assert row["first_queued_at"] == before["b"]["queued_at"]
        assert await store.requeue(delivery_id=999) == []
    finally:
        await store.close()


@pytest.mark.parametrize(("durability", "pragma"), [("full", 2), ("process", 1)])
async def test_storage_durability_sets_the_write_connections_synchronous_mode(
    tmp_path: Path, durability: str, pragma: int
) -> None:
    """FULL (2) fsyncs the WAL at every commit; NORMAL (1) leaves it to the OS until the
    next checkpoint. The config key reaches the connection every accept commits on."""
    storage = {"durability": durability}
    config = load_config(write_config(tmp_path, base_config(tmp_path, storage=storage)))
    store = create_store(config.storage)
    await store.open()
    try:
        assert isinstance(store, SqliteStore)
        mode = await store.write(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
        assert mode == pragma
        await store.accept(parse_event(payload(event_id="durable")), [], [], None, {})
    finally:
        await store.close()
    assert "durable" in stored_keys(tmp_path / "gateway.db")


async def _writer_with_company(path: Path, linger: tuple[float, float]) -> GroupCommitWriter:
    """A started writer whose last batch held two jobs (as under concurrent webhooks)."""
    writer = GroupCommitWriter(path, 5.0, None, linger=linger)
    writer.start(asyncio.get_running_loop())
    inside, gate = threading.Event(), threading.Event()

    def held(conn: sqlite3.Connection) -> None:
        inside.set()
        gate.wait(5)

    first = writer.submit(held)
    await asyncio.to_thread(inside.wait, 5)
    queued = [writer.submit(lambda conn: None) for _ in range(2)]  # wait behind the first
    gate.set()
    await asyncio.gather(first, *queued)
    return writer


async def test_after_a_batch_with_company_the_writer_lingers_for_the_next_jobs(
    tmp_path: Path,
) -> None:
    # lingers far longer than any scheduling delay: only the writer's choice can split them
    writer = await _writer_with_company(tmp_path / "w.db", linger=(30.0, 60.0))
    try:
        before = writer.batches
        early = writer.submit(lambda conn: None)
        await asyncio.sleep(0.05)
        later = [writer.submit(lambda conn: None) for _ in range(2)]
        # the last batch held 2, so it expects 3: committed once the third is in, not later
        await asyncio.wait_for(asyncio.gather(early, *later), 20)
        assert writer.batches == before + 1  # one commit for all three
    finally:
        writer.stop()


async def test_after_a_lone_job_the_writer_commits_at_once(tmp_path: Path) -> None:
    writer = GroupCommitWriter(tmp_path / "w.db", 5.0, None, linger=(30.0, 60.0))
    writer.start(asyncio.get_running_loop())
    try:
        await writer.submit(lambda conn: None)  # a quiet gateway: batches of one
        # had it lingered, this would take 30 s
        await asyncio.wait_for(writer.submit(lambda conn: None), 20)
    finally:
        writer.stop()


async def test_a_turn_that_hands_over_more_than_max_batch_commits_in_several(
    tmp_path: Path,
) -> None:
    writer = GroupCommitWriter(tmp_path / "w.db", 5.0, None)
    writer.start(asyncio.get_running_loop())
    try:
        # one turn of the loop: handed to the writer thread as one list
        futures = [writer.submit(lambda conn: None) for _ in range(MAX_BATCH + 10)]
        await asyncio.wait_for(asyncio.gather(*futures), 30)
        assert (writer.batches, writer.jobs) == (2, MAX_BATCH + 10)  # MAX_BATCH, then 10
    finally:
        writer.stop()


async def test_a_write_after_the_store_closed_fails_at_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "gateway.db")
    await store.open()
    await store.close()
    with pytest.raises(StoreError) as raised:
        await asyncio.wait_for(store.write(lambda conn: None), 5)  # not a wait for ever
    assert raised.value.reason == "closed"


def test_recent_events_keep_the_newest_within_their_bytes() -> None:
    events = {row: parse_event(payload("Finished Journey", eventId=f"r-{row}")) for row in range(5)}
    size = len(events[0].raw)
    recent = RecentEvents(limit=3 * size + size // 2)
    for row, event in events.items():
        recent.add(row, event, 1)
    kept = [recent.take(row, events[row].raw) for row in range(5)]
    assert kept == [None, None, events[2], events[3], events[4]]
    assert len(recent) == 0


def test_recent_events_hand_an_event_to_each_of_its_deliveries_once() -> None:
    recent = RecentEvents()
    event = parse_event(payload("Finished Journey", eventId="three"))
    recent.add(4, event, 3)
    assert [recent.take(4, event.raw) for _ in range(4)] == [event, event, event, None]
    recent.add(5, event, 0)  # nothing to deliver: not kept
    assert len(recent) == 0


def test_recent_events_hand_out_an_event_only_for_its_own_bytes() -> None:
    recent = RecentEvents()
    old = parse_event(payload("Finished Journey", eventId="old"))
    recent.add(7, old, 2)
    assert recent.take(7, payload("Finished Journey", eventId="new")) is None
    assert recent.take(7, old.raw) is None  # the row holds other bytes now: forgotten


def test_recent_events_leave_large_payloads_to_be_parsed_again() -> None:
    recent = RecentEvents()
    large = parse_event(
        payload("Finished Journey", eventId="big", notes="x" * RecentEvents.LARGEST)
    )
    recent.add(1, large, 1)
    assert recent.take(1, large.raw) is None

"""The store queries the console reads (and the CLI shares), over both backends: keyset
pages, bounded scans, outcome filters, stored duplicates and per-destination statistics."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from gateway import idwise
from gateway.events import Event, parse_event
from gateway.store import AttemptRecord, EventFilter, Store
from gateway.store.sqlite import SqliteStore


def event(number: int, event_type: str = "Finished Journey", **body: object) -> Event:
    document = idwise.sample(event_type)
    document["body"].update(
        eventId=f"e-{number}", journeyId=f"j-{number % 4}", referenceNo=f"R{number}", **body
    )
    return parse_event(json.dumps(document).encode())


async def test_keyset_pages_cover_every_event_once_newest_first(store: Store) -> None:
    await store.import_events([event(i) for i in range(125)], time.time())
    seen: list[int] = []
    before = None
    while True:
        page = await store.page_events(EventFilter(), before=before, limit=50)
        seen += [row["id"] for row in page.rows]
        if page.next_before is None:
            break
        before = page.next_before
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 125
    by_journey = await store.page_events(EventFilter(journey="j-1"), limit=100)
    assert len(by_journey.rows) == 31
    by_reference = await store.page_events(EventFilter(reference="R7"), limit=100)
    assert [row["reference_no"] for row in by_reference.rows] == ["R7"]


async def test_a_window_bounds_unindexed_filters_and_says_how_far_it_searched(store: Store) -> None:
    await store.import_events([event(0, "Updated Journey")], time.time())
    await store.import_events([event(i) for i in range(1, 101)], time.time())
    query = EventFilter(event_type="Updated Journey")
    page = await store.page_events(query, limit=10, window=30)
    assert (
        page.rows == [] and page.searched_down_to == 72 and page.next_before == 72
    )  # ids 72-101 examined
    while page.next_before is not None and not page.rows:
        page = await store.page_events(query, before=page.next_before, limit=10, window=30)
    assert [row["event_type"] for row in page.rows] == ["Updated Journey"]
    assert page.next_before is None  # nothing older left to search
    text = await store.page_events(EventFilter(text="r100"), limit=10, window=1000)
    assert [row["reference_no"] for row in text.rows] == ["R100"]  # case-insensitive


async def test_time_bounds_and_outcomes(store: Store) -> None:
    now = time.time()
    await store.import_events([event(i) for i in range(10)], now - 7200, destination="sink")
    await store.import_events([event(i) for i in range(10, 20)], now - 60)
    recent = await store.page_events(EventFilter(since=now - 3600), limit=50)
    assert len(recent.rows) == 10
    old = await store.page_events(EventFilter(until=now - 3600), limit=50)
    assert {row["id"] for row in old.rows} == set(range(1, 11))
    delivered = await store.page_events(EventFilter(outcome="delivered"), limit=50, window=1000)
    assert len(delivered.rows) == 10
    unrouted = await store.page_events(EventFilter(outcome="unrouted"), limit=50, window=1000)
    assert len(unrouted.rows) == 10
    accepted = await store.accept(event(99), [("api", "all")], ["all"], "127.0.0.1", {})
    [delivery] = accepted.delivery_ids
    pending = await store.page_events(EventFilter(outcome="pending"), limit=50)
    assert [row["id"] for row in pending.rows] == [accepted.event_row]
    await store.record([AttemptRecord(delivery, 1, now, 0.1, "dead", "http_400", 400, "HTTP 400")])
    dead = await store.page_events(EventFilter(outcome="dead"), limit=50)
    assert [row["dead"] for row in dead.rows] == [1]


async def test_duplicates_are_stored_counted_and_pruned_with_their_event(store: Store) -> None:
    first = await store.accept(event(1), [], [], "10.0.0.1", {})
    for _ in range(3):
        again = await store.accept(event(1), [], [], "10.0.0.2", {})
        assert again.status == "duplicate"
    counts = await store.webhook_counts(time.time() - 60)
    assert counts == {"accepted": 1, "duplicate": 3}
    duplicated = await store.page_events(EventFilter(outcome="duplicate"), limit=10)
    assert [row["id"] for row in duplicated.rows] == [first.event_row]
    assert await store.prune(time.time() + 1) == 1
    assert await store.webhook_counts(0) == {"accepted": 0, "duplicate": 0}


async def test_delivery_stats_per_destination(store: Store) -> None:
    now = time.time()
    ids = []
    for i in range(3):
        accepted = await store.accept(
            event(i), [("api", "all"), ("mail", "all")], ["all"], None, {}
        )
        ids.append(accepted.delivery_ids)
    await store.record(
        [
            AttemptRecord(ids[0][0], 1, now, 0.2, "retry", "http_5xx", 503, "HTTP 503", next_attempt_at=now + 60),
            AttemptRecord(ids[1][0], 1, now, 0.1, "dead", "http_400", 400, "HTTP 400"),
            AttemptRecord(ids[0][1], 1, now, 0.1, "delivered"),
        ]
    )  # fmt: skip
    stats = {row["destination"]: row for row in await store.delivery_stats()}
    assert stats["api"]["pending"] == 2 and stats["api"]["retrying"] == 1
    assert stats["api"]["dead"] == 1
    assert stats["api"]["last_error"]["reason"] in ("http_400", "http_5xx")
    assert stats["mail"]["pending"] == 2 and stats["mail"]["retrying"] == 0
    assert stats["mail"]["last_error"] is None
    assert await store.count_deliveries(status="dead", destination="api") == 1
    assert await store.count_deliveries(status="pending") == 4


async def test_sqlite_finds_a_reference_number_through_its_index(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "plan.db")
    await store.open()
    await store.close()
    conn = sqlite3.connect(tmp_path / "plan.db")
    plan = " ".join(
        str(row)
        for row in conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM events WHERE reference_no = 'R1'"
        )
    )
    assert "events_reference" in plan


async def test_replay_of_pending_only_never_touches_finished_ones(store: Store) -> None:
    now = time.time()
    rows = [
        (await store.accept(event(i), [("api", "all")], ["all"], None, {})).delivery_ids[0]
        for i in range(3)
    ]
    await store.record(
        [
            AttemptRecord(rows[0], 1, now, 0.1, "delivered"),
            AttemptRecord(rows[1], 1, now, 0.1, "dead", "http_400"),
            AttemptRecord(rows[2], 1, now, 0.1, "retry", "http_5xx", next_attempt_at=now + 3600),
        ]
    )
    assert await store.replay(pending=True, destination="api") == 1
    assert await store.count_deliveries(status="delivered") == 1
    assert await store.count_deliveries(status="dead") == 1

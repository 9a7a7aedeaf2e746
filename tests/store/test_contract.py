"""The Store contract, run over both backends (SQLite file, real PostgreSQL server): the
same calls give the same answers, so the handlers, the engine and the CLI need not know
which one they have."""

from __future__ import annotations

import asyncio
import json
import time

from gateway import idwise
from gateway.events import Event, parse_event
from gateway.store import AttemptRecord, Store


def event(event_id: str, journey: str = "j-1", event_type: str = "Finished Journey") -> Event:
    document = idwise.sample(event_type)
    document["body"].update(eventId=event_id, journeyId=journey)
    return parse_event(json.dumps(document).encode())


async def accept(store: Store, event_id: str, *destinations: str, journey: str = "j-1") -> int:
    routes = [(d, "rule-1") for d in destinations or ("svc",)]
    accepted = await store.accept(event(event_id, journey), routes, ["rule-1"], "10.0.0.1", {})
    return accepted.event_row


def delivered(delivery_id: int, number: int = 1, claim: int = 0) -> AttemptRecord:
    return AttemptRecord(
        delivery_id, number, time.time(), 0.01, "delivered", status_code=200, claim=claim
    )


async def test_an_event_and_its_deliveries_are_accepted_once(store: Store) -> None:
    first = await store.accept(
        event("e-1"), [("a", "r1"), ("b", "r2")], ["r1", "r2"], "10.0.0.1", {"X": "y"}
    )
    again = await store.accept(event("e-1"), [("a", "r1")], ["r1"], None, {})
    assert first.status == "accepted" and len(first.delivery_ids) == 2
    assert (again.status, again.event_row, again.delivery_ids) == ("duplicate", first.event_row, ())
    (listed,) = await store.list_events()
    assert (listed["dedupe_key"], listed["deliveries"], listed["pending"]) == ("e-1", 2, 2)
    assert listed["rules"] == ["r1", "r2"]
    shown = await store.get_event("e-1")
    assert shown is not None
    assert shown["headers"] == {"X": "y"} and shown["payload"]["body"]["eventId"] == "e-1"
    assert {d["destination"] for d in shown["deliveries"]} == {"a", "b"}
    assert (await store.get_event(str(first.event_row)) or {})["dedupe_key"] == "e-1"
    assert await store.get_event("nope") is None


async def test_concurrent_accepts_of_one_event_store_it_once(store: Store) -> None:
    results = await asyncio.gather(
        *(store.accept(event("same"), [("svc", "r")], ["r"], None, {}) for _ in range(30))
    )
    assert sorted(r.status for r in results).count("accepted") == 1
    assert len({r.event_row for r in results}) == 1
    assert len(await store.list_deliveries()) == 1


async def test_a_nul_in_a_text_field_is_stored(store: Store) -> None:
    raw = json.dumps({"event": "Odd\u0000Type", "body": {"eventId": "nul\u0000-1"}}).encode()
    accepted = await store.accept(parse_event(raw), [("svc", None)], [], None, {})
    assert accepted.status == "accepted"
    (due,) = await store.due("svc", time.time() + 1, 10, True)
    assert due.raw == raw  # the body byte for byte


async def test_due_respects_journey_order_and_exclusions(store: Store) -> None:
    for i, journey in enumerate(["j-1", "j-1", "j-2"]):
        await accept(store, f"o-{i}", journey=journey)
    ids = sorted(r["id"] for r in await store.list_deliveries())
    now = time.time() + 1
    ordered = await store.due("svc", now, 10, True)
    assert [d.id for d in ordered] == [ids[0], ids[2]]
    assert [d.id for d in await store.due("svc", now, 10, False, exclude=ordered and ids[:2])] in (
        [ids[2]],
        [],  # a backend with claims already handed ids[2] out above
    )


async def test_outcomes_and_the_attempt_history(store: Store) -> None:
    await accept(store, "h-1")
    (due,) = await store.due("svc", time.time() + 1, 10, True)
    retry_at = time.time() + 60
    await store.record(
        [
            AttemptRecord(
                due.id, 1, time.time(), 0.5, "retry", reason="http_503", status_code=503,
                detail="busy", next_attempt_at=retry_at, claim=due.claim,
            )
        ]
    )  # fmt: skip
    assert await store.due("svc", time.time() + 1, 10, True) == []
    (again,) = await store.due("svc", retry_at + 1, 10, True)
    assert again.attempts == 1
    await store.record([delivered(due.id, 2, again.claim)])
    shown = await store.get_delivery(due.id)
    assert shown is not None
    assert (shown["status"], shown["attempts"]) == ("delivered", 2)
    history = [(a["number"], a["outcome"], a["status_code"]) for a in shown["attempt_history"]]
    assert history == [(1, "retry", 503), (2, "delivered", 200)]
    assert await store.list_deliveries(status="delivered") != []
    assert await store.list_deliveries(status="pending") == []
    assert await store.pending_stats() == []


async def test_an_uncounted_attempt_is_history_only_not_budget(store: Store) -> None:
    """A shortage of our own (no file descriptors) is recorded but moves the budget's base,
    so the delivery keeps its whole max_attempts."""
    await accept(store, "u-1")
    (due,) = await store.due("svc", time.time() + 1, 10, True)
    retry_at = time.time() + 30
    await store.record(
        [
            AttemptRecord(
                due.id, 1, time.time(), 0.0, "retry", reason="local_resources",
                next_attempt_at=retry_at, claim=due.claim, counted=False,
            )
        ]
    )  # fmt: skip
    (again,) = await store.due("svc", retry_at + 1, 10, True)
    assert (again.attempts, again.attempt_base) == (1, 1)
    shown = await store.get_delivery(due.id)
    assert shown is not None
    assert [a["reason"] for a in shown["attempt_history"]] == ["local_resources"]


async def test_replay_requeues_dead_and_never_duplicates_pending(store: Store) -> None:
    await accept(store, "r-1")
    (delivery,) = await store.list_deliveries()
    assert await store.replay(delivery_id=delivery["id"]) == 1
    (due,) = await store.due("svc", time.time() + 1, 10, True)
    await store.record(
        [AttemptRecord(due.id, 1, time.time(), 0.1, "dead", reason="http_400", claim=due.claim)]
    )
    assert await store.replay(dead=True, destination="other") == 0
    assert await store.replay(dead=True) == 1
    (row,) = await store.list_deliveries()
    assert (row["status"], row["attempts"], row["reason"]) == ("pending", 1, None)
    (again,) = await store.due("svc", time.time() + 1, 10, True)
    assert again.attempt_base == 1
    assert await store.replay(event="r-1") == 1
    assert len(await store.list_deliveries()) == 1


async def test_reroute_adds_only_new_routes(store: Store) -> None:
    row = await accept(store, "rr-1", "a")
    events = await store.events_for_reroute(event="rr-1")
    assert [r for r, _ in events] == [row] and json.loads(events[0][1])["body"]["eventId"] == "rr-1"
    assert await store.existing_routes([row]) == {(row, "a")}
    assert await store.add_routes([(row, "a", "r", "j-1"), (row, "b", "r", "j-1")]) == 1
    assert {d["destination"] for d in await store.list_deliveries()} == {"a", "b"}
    assert await store.events_for_reroute(since=time.time() + 60) == []


async def test_expiry_uses_each_destinations_max_age_and_skips_in_flight(store: Store) -> None:
    old = time.time() - 7200
    for i, destination in enumerate(["short", "short", "long", "removed"]):
        await store.accept(
            event(f"x-{i}", journey=f"j-{i}"), [(destination, "r")], ["r"], None, {}, old
        )
    keep = min(r["id"] for r in await store.list_deliveries(destination="short"))
    expired = await store.expire({"short": 3600, "long": 86400}, 60, time.time(), in_flight={keep})
    assert expired == {"short": 1, "removed": 1}
    by_id = {r["id"]: r["status"] for r in await store.list_deliveries()}
    assert by_id[keep] == "pending"
    assert sorted(by_id.values()) == ["dead", "dead", "pending", "pending"]


async def test_retention_prunes_only_finished_old_events(store: Store) -> None:
    old = time.time() - 7200
    await store.accept(event("p-1", "j-1"), [("svc", "r")], ["r"], None, {}, old)
    await store.accept(event("p-2", "j-2"), [("svc", "r")], ["r"], None, {}, old)
    await store.accept(event("p-3", "j-3"), [("svc", "r")], ["r"], None, {})
    (first, *_) = await store.due("svc", time.time() + 1, 1, True)
    await store.record([delivered(first.id, claim=first.claim)])
    assert await store.prune(time.time() - 3600) == 1
    assert {e["dedupe_key"] for e in await store.list_events()} == {"p-2", "p-3"}
    assert await store.prune(time.time() - 3600) == 0


async def test_filters_of_the_listing_commands(store: Store) -> None:
    await accept(store, "f-1", "a", journey="j-9")
    await accept(store, "f-2", "b", journey="j-8")
    assert [e["dedupe_key"] for e in await store.list_events(journey="j-9")] == ["f-1"]
    assert [e["dedupe_key"] for e in await store.list_events(destination="b")] == ["f-2"]
    assert [e["dedupe_key"] for e in await store.list_events(limit=1)] == ["f-2"]
    assert await store.list_events(event_type="Nope") == []
    assert await store.list_events(since=time.time() + 60) == []
    assert [d["destination"] for d in await store.list_deliveries(journey="j-8")] == ["b"]
    assert [d["dedupe_key"] for d in await store.list_deliveries(destination="a")] == ["f-1"]
    stats = {s["destination"]: s["pending"] for s in await store.pending_stats()}
    assert stats == {"a": 1, "b": 1}


async def test_a_commit_that_made_deliveries_due_is_heard(store: Store) -> None:
    heard: list[object] = []
    undo = store.listen(lambda destinations: heard.append(sorted(destinations or ["*"])))
    await accept(store, "l-1", "a", "b")
    undo()
    await store.heartbeat()
    assert ["a", "b"] in heard


async def test_import_events_skips_duplicates(store: Store) -> None:
    batch = [event("i-1"), event("i-2")]
    assert await store.import_events(batch, time.time(), destination="svc") == 2
    assert await store.import_events(batch, time.time(), destination="svc") == 0
    assert {d["status"] for d in await store.list_deliveries()} == {"delivered"}


async def test_requeue_says_what_it_queued_and_keeps_the_first_queued_time(store: Store) -> None:
    row = await accept(store, "q-1", "a", "b")
    for due in [*await store.due("a", time.time() + 1, 10, True)]:
        await store.record(
            [AttemptRecord(due.id, 1, time.time(), 0.1, "dead", reason="x", claim=due.claim)]
        )
    (dead,) = await store.list_deliveries(status="dead")
    requeued = await store.requeue(dead=True)
    assert [(r.delivery_id, r.event_row, r.destination) for r in requeued] == [
        (dead["id"], row, "a")
    ]
    (again,) = [d for d in await store.list_deliveries() if d["id"] == dead["id"]]
    assert again["status"] == "pending"
    assert again["first_queued_at"] == dead["queued_at"] <= again["queued_at"]


async def test_a_delivery_due_soon_after_ingest_carries_the_parsed_event(store: Store) -> None:
    """The event this process just accepted goes to its delivery as parsed at ingest (no
    second JSON read), once; after that (a retry) the stored bytes serve."""
    fresh = event("fresh-1")
    await store.accept(fresh, [("svc", "r"), ("other", "r")], ["r"], None, {})
    (job,) = await store.due("svc", time.time() + 1, 10, False)
    (other,) = await store.due("other", time.time() + 1, 10, False)
    assert job.event is fresh and other.event is fresh
    assert job.raw == fresh.raw
    if store.shared:
        return  # a backend with claims handed the delivery out above: nothing due again
    (again,) = await store.due("svc", time.time() + 1, 10, False)
    assert again.event is None
    assert again.raw == fresh.raw


async def test_an_event_is_handed_out_only_for_the_bytes_stored_under_its_row(
    store: Store,
) -> None:
    """SQLite gives a pruned event's row id to the next event: a delivery queued for that
    one later (a reroute) must carry its own payload, never the pruned one's."""
    first = await store.accept(event("gone-1"), [("svc", "r")], ["r"], None, {})
    (job,) = await store.due("svc", time.time() + 1, 10, False)
    await store.record([delivered(job.id, claim=job.claim)])
    assert await store.prune(time.time() + 10) == 1
    later = event("next-1")
    second = await store.accept(later, [], [], None, {})  # no route matched it
    await store.add_routes([(second.event_row, "svc", None, "j-1")])
    (rerouted,) = await store.due("svc", time.time() + 1, 10, False)
    assert rerouted.raw == later.raw
    assert rerouted.event is None or rerouted.event.raw == later.raw
    if second.event_row == first.event_row:  # the backend reused the row
        assert rerouted.event is None

"""Fault injection against real gateway processes: SIGKILL, destinations down, disk full,
locked database, SIGHUP storms and SIGTERM, all under load.

The promise under test: a 200 means the event is stored and its deliveries are queued, and
every queued delivery reaches its destination at least once, whatever happens meanwhile.
Set FAULT_SEED to replay a run's random kill moments.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.config import base_config, free_port, write_config
from tests.support.load import Load
from tests.support.payloads import payload
from tests.support.process import GatewayProcess, post
from tests.support.sinks import Sink, SinkLoop
from tests.support.store import deliveries, event_count, routes, status_counts, stored_keys
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow  # real gateway processes

REPLAY = [sys.executable, "-m", "gateway", "replay"]
JOURNEY_TYPES = {"Finished Journey", "Updated Journey"}
TYPES = ("Finished Journey", "Finished Step", "Updated Journey", "AML Monitor Update")
FAST = {
    "max_attempts": 1000,
    "backoff": {"initial": "20ms", "max": "150ms", "multiplier": 2, "jitter": 0.1},
    "timeout": "2s",
    "max_age": "1h",
}


def two_destinations(tmp_path: Path, url_a: str, url_b: str, **sections: Any) -> dict[str, Any]:
    """`a` gets every event; `b` gets journey events only."""
    return base_config(
        tmp_path,
        **{
            "server": {"shutdown_grace": "2s"},
            "delivery": FAST,
            "destinations": {
                "a": {"type": "http", "url": url_a},
                "b": {"type": "http", "url": url_b},
            },
            "rules": [
                {"name": "all-to-a", "to": ["a"]},
                {"name": "journeys-to-b", "events": sorted(JOURNEY_TYPES), "to": ["b"]},
            ],
            **sections,
        },
    )


def expected_destinations(event_type: str) -> set[str]:
    return {"a", "b"} if event_type in JOURNEY_TYPES else {"a"}


def assert_everything_delivered(
    db: Path, sink: Sink, timeout: float = 30.0, *, where: str = ""
) -> dict[str, set[str]]:
    """Every delivery row of every stored event reaches the sink (2xx) at least once."""
    chosen = routes(db)
    wanted = {dest: {key for key, dests in chosen.items() if dest in dests} for dest in ("a", "b")}

    def missing() -> dict[str, set[str]]:
        return {dest: keys - set(sink.delivered(dest)) for dest, keys in wanted.items()}

    try:
        wait_until(lambda: not any(missing().values()), timeout, "every delivery")
    except AssertionError:
        gone = missing()
        raise AssertionError(
            f"{where}undelivered: a={len(gone['a'])} b={len(gone['b'])} "
            f"e.g. {sorted(gone['a'] | gone['b'])[:5]}; statuses "
            f"{status_counts(db)}"
        ) from None
    assert deliveries(db, status="dead") == []
    return chosen


# ------------------------------------------------------------------------------ SIGKILL
def test_sigkill_at_random_moments_under_load_loses_nothing(
    tmp_path: Path, sinks: SinkLoop
) -> None:
    seed = int(os.environ.get("FAULT_SEED") or time.time_ns() % 1_000_000)
    rng = random.Random(seed)
    sink = sinks.start(delay=0.005)
    path = write_config(tmp_path, two_destinations(tmp_path, sink.url_for("a"), sink.url_for("b")))
    db = tmp_path / "gateway.db"
    types: dict[str, str] = {}

    def choose(worker: int, n: int) -> tuple[str, str, dict[str, Any]]:
        event_type = TYPES[(worker + n) % len(TYPES)]
        event_id = f"kill-{worker}-{n}"
        types[event_id] = event_type
        return event_type, event_id, {"journeyId": f"j-{worker}-{n % 3}"}

    gateway = GatewayProcess(path).start()
    kills = []
    try:
        with Load(gateway.url, choose, workers=4, timeout=5) as load:
            for _ in range(3):
                time.sleep(rng.uniform(0.25, 1.0))
                kills.append(len(load.outcomes))
                gateway.signal(signal.SIGKILL)
                assert gateway.wait(10) == -signal.SIGKILL
                gateway.stop()
                time.sleep(rng.uniform(0.0, 0.3))
                gateway = GatewayProcess(path).start()
            load.wait_for(40)  # the last incarnation takes load too
        accepted = load.accepted()
        stored = stored_keys(db)
        note = f"(FAULT_SEED={seed}, kills after requests {kills}) "
        assert len(accepted) > 50, note + str(load.statuses())
        # an answer is a 200; a killed or restarting gateway gives no answer at all
        assert {o.status for o in load.outcomes} <= {200, None}, note + str(load.statuses())
        lost = accepted - stored
        assert not lost, f"{note}{len(lost)} events answered 200 are not stored: {sorted(lost)[:5]}"
        chosen = assert_everything_delivered(db, sink, where=note)
        for key in stored:
            assert chosen[key] == expected_destinations(types[key]), (key, chosen[key])
        # and nothing that was not posted shows up
        assert stored <= set(types)
    finally:
        gateway.stop()


# ---------------------------------------------------------------- destinations down, order
def test_destinations_down_then_up_deliver_everything_in_journey_order(
    tmp_path: Path, sinks: SinkLoop
) -> None:
    """`a` answers 503 to its first 15 requests; `b` is a closed port for ~1.5 s before a
    sink starts listening on it. Four journeys of six events each, posted interleaved."""
    failures = 15
    sink_a = sinks.start()
    sink_a.responses = [503] * failures
    port_b = free_port()
    path = write_config(
        tmp_path,
        two_destinations(
            tmp_path,
            sink_a.url_for("a"),
            f"http://127.0.0.1:{port_b}/b",
            rules=[{"name": "everything", "to": ["a", "b"]}],
        ),
    )
    journeys = {f"journey-{j}": [f"j{j}-e{e}" for e in range(6)] for j in range(4)}
    db = tmp_path / "gateway.db"
    gateway = GatewayProcess(path).start()
    try:
        for e in range(6):
            for j, (journey, ids) in enumerate(journeys.items()):
                body = payload(TYPES[(j + e) % 4], event_id=ids[e], journey=journey)
                status, answer = post(gateway.url, body)
                assert (status, answer.get("status")) == (200, "accepted")
        time.sleep(1.5)
        assert sink_a.received, "destination a was never tried"
        sink_b = sinks.start(port=port_b)
        assert event_count(db) == 24
        wait_until(
            lambda: len(set(sink_a.delivered("a"))) == 24 and len(set(sink_b.delivered("b"))) == 24,
            timeout=30,
            what="all 24 events at both destinations",
        )
        # a sink has the request before the gateway has recorded its answer: wait for that
        wait_until(
            lambda: status_counts(db) == {"delivered": 48},
            timeout=10,
            what="all 48 deliveries recorded as delivered",
        )
    finally:
        gateway.stop()
    assert len(sink_a.answered) >= 24 + failures
    assert [s for _, s in sink_a.answered[:failures]] == [503] * failures
    for sink, path_name in ((sink_a, "a"), (sink_b, "b")):
        for journey, ids in journeys.items():
            tried = [
                r.headers["Idempotency-Key"]
                for r in sink.attempts(path_name)
                if r.headers["Idempotency-Key"] in ids
            ]
            delivered = [k for k in sink.delivered(path_name) if k in ids]
            assert delivered == ids, f"{path_name}/{journey} delivered out of order: {delivered}"
            # a retrying event holds back the later ones of its journey: attempts never go back
            positions = [ids.index(k) for k in tried]
            assert positions == sorted(positions), f"{path_name}/{journey} attempts: {tried}"


# ----------------------------------------------------------------------------- disk full
def test_disk_full_under_load_never_acknowledges_an_unstored_event_and_recovers(
    tmp_path: Path, sinks: SinkLoop
) -> None:
    sink = sinks.start()
    config = two_destinations(
        tmp_path, sink.url_for("a"), sink.url_for("b"), storage={"max_size": 300_000}
    )
    path = write_config(tmp_path, config)
    db = tmp_path / "gateway.db"
    pad = "x" * 3000

    def choose(worker: int, n: int) -> tuple[str, str, dict[str, Any]]:
        return TYPES[n % 4], f"full-{worker}-{n}", {"padding": pad, "journeyId": f"f{n % 8}"}

    gateway = GatewayProcess(path).start()
    try:
        with Load(gateway.url, choose, workers=4) as load:
            wait_until(
                lambda: sum(o.status == 503 for o in load.outcomes) >= 30,
                timeout=30,
                what="the store to fill up (30 answers 503)",
            )
        outcomes = list(load.outcomes)
        statuses = load.statuses()
        assert set(statuses) == {200, 503}, statuses
        assert {o.answer for o in outcomes if o.status == 503} == {"store_unavailable"}
        accepted = load.accepted()
        refused = {o.event_id for o in outcomes if o.status == 503}
        stored = stored_keys(db)
        assert accepted <= stored, f"200 without a stored event: {sorted(accepted - stored)[:5]}"
        assert not (refused & stored), f"503 but stored: {sorted(refused & stored)[:5]}"
        assert stored == accepted
        # nearly full: a new event may still fit a page's free space; either way, the
        # answer tells the truth
        for i in range(5):
            event_id = f"while-full-{i}"
            status, answer = post(
                gateway.url, payload("Finished Journey", event_id=event_id, padding=pad)
            )
            assert status in (200, 503), (status, answer)
            assert (event_id in stored_keys(db)) == (status == 200), (status, answer)
            if status == 200:
                accepted.add(event_id)
    finally:
        gateway.stop()  # SIGKILL: the cause of the failure goes away only with a restart

    # the cause is gone: the same database, no size cap
    config["storage"].pop("max_size")
    write_config(tmp_path, config)
    gateway = GatewayProcess(path).start()
    try:
        for i in range(20):
            status, answer = post(
                gateway.url, payload("Finished Journey", event_id=f"after-{i}", padding=pad)
            )
            assert (status, answer.get("status")) == (200, "accepted")
        stored = stored_keys(db)
        assert accepted | {f"after-{i}" for i in range(20)} <= stored
        assert_everything_delivered(db, sink)
    finally:
        gateway.stop()


# ------------------------------------------------------------------------- locked store
def test_locked_database_under_load_answers_503_then_200(tmp_path: Path, sinks: SinkLoop) -> None:
    sink = sinks.start()
    config = two_destinations(
        tmp_path, sink.url_for("a"), sink.url_for("b"), storage={"busy_timeout": "200ms"}
    )
    db = tmp_path / "gateway.db"
    gateway = GatewayProcess(write_config(tmp_path, config)).start()

    def choose(worker: int, n: int) -> tuple[str, str, dict[str, Any]]:
        return TYPES[n % 4], f"lock-{worker}-{n}", {"journeyId": f"lock-{worker}-{n % 8}"}

    try:
        with Load(gateway.url, choose, workers=4) as load:
            load.wait_for(30)
            # the fault itself: another process holds the write lock (raw SQL on purpose)
            blocker = sqlite3.connect(db, timeout=10, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            locked_at = time.monotonic()
            time.sleep(1.0)
            blocker.execute("ROLLBACK")
            released_at = time.monotonic()
            blocker.close()
            time.sleep(1.0)
        outcomes = list(load.outcomes)
        statuses = load.statuses()
        assert set(statuses) <= {200, 503}, statuses
        assert {o.answer for o in outcomes if o.status == 503} <= {"store_unavailable"}
        refused_at = [o for o in outcomes if o.status == 503]
        assert refused_at, "the lock never caused a 503"
        # a 503 only while the lock was held (each waits out busy_timeout, plus queueing)
        assert all(locked_at < o.done_at and o.sent_at < released_at for o in refused_at)
        # nothing can commit while the lock is held
        during = [o for o in outcomes if o.sent_at >= locked_at and o.done_at <= released_at]
        assert all(o.status == 503 for o in during), [o.status for o in during]
        after = [o for o in outcomes if o.sent_at >= released_at + 0.5]
        assert after and all(o.status == 200 for o in after), [o.status for o in after]
        stored = stored_keys(db)
        refused = {o.event_id for o in outcomes if o.status == 503}
        assert load.accepted() == stored
        assert not refused & stored
        assert_everything_delivered(db, sink)
    finally:
        gateway.stop()


# --------------------------------------------------------------- SIGHUP storm, SIGTERM
def test_sighup_storm_then_sigterm_under_load_loses_nothing(
    tmp_path: Path, sinks: SinkLoop
) -> None:
    sink = sinks.start(delay=0.02)
    config = two_destinations(tmp_path, sink.url_for("a"), sink.url_for("b"))
    path = write_config(tmp_path, config)
    variants = [config, {**config, "rules": [{"name": "all-to-a", "to": ["a"]}]}]
    db = tmp_path / "gateway.db"

    def choose(worker: int, n: int) -> tuple[str, str, dict[str, Any]]:
        return TYPES[(worker + n) % 4], f"hup-{worker}-{n}", {"journeyId": f"hj-{worker}-{n % 8}"}

    gateway = GatewayProcess(path).start()
    try:
        with Load(gateway.url, choose, workers=4, timeout=10) as load:
            load.wait_for(20)
            signals = 0
            storm_end = time.monotonic() + 1.5
            while time.monotonic() < storm_end:
                if signals % 10 == 0:  # swap rules between two valid configs, atomically
                    staged = tmp_path / "staged.yaml"
                    staged.write_text(yaml.safe_dump(variants[(signals // 10) % 2]))
                    os.replace(staged, path)
                gateway.signal(signal.SIGHUP)
                signals += 1
                time.sleep(0.01)
            load.wait_for(20)
            terminated_at = time.monotonic()
            gateway.signal(signal.SIGTERM)
            assert gateway.wait(15) == 0, gateway.logs()[-2000:]
            time.sleep(0.2)
        outcomes = list(load.outcomes)
        for o in outcomes:
            assert o.status in (200, 503, None), o
            if o.status == 503:
                assert o.answer == "shutting_down", o
                assert o.done_at >= terminated_at, o
            if o.status is None:  # no answer: only once the listener closed (the tolerance
                # covers a request still in the accept backlog of a very busy machine)
                assert o.sent_at >= terminated_at - 1.0, o
        assert any(o.sent_at >= terminated_at for o in outcomes), "SIGTERM did not overlap load"
        accepted = load.accepted()
        stored = stored_keys(db)
        assert accepted <= stored, f"200 but not stored: {sorted(accepted - stored)[:5]}"
        reloads = gateway.logged("config reloaded")
        assert 1 <= len(reloads) <= signals, (len(reloads), signals)  # never more than asked
        assert not gateway.logged("config reload failed; the previous config stays active")
    finally:
        gateway.stop()
    # every stored event was routed by one config or the other, never by none
    chosen = routes(db)
    assert set(chosen) == stored
    assert all("a" in dests for dests in chosen.values())
    gateway = GatewayProcess(path).start()
    try:
        assert_everything_delivered(db, sink)
    finally:
        gateway.stop()


def test_cli_replay_from_another_process_under_load_touches_only_what_it_names(
    tmp_path: Path, sinks: SinkLoop
) -> None:
    """`replay --event` from another process while the gateway delivers under load: the
    replayed event is delivered again, everything else exactly as often as it was queued
    (the replay only touches what it names)."""
    sink = sinks.start(delay=0.01)
    config = two_destinations(  # the CLI waits for the serving writer (default busy_timeout)
        tmp_path, sink.url_for("a"), sink.url_for("b"), storage={"busy_timeout": "5s"}
    )
    path = write_config(tmp_path, config)
    db = tmp_path / "gateway.db"
    gateway = GatewayProcess(path).start()
    try:
        status, _ = post(gateway.url, payload("Finished Step", event_id="replayed-one"))
        assert status == 200
        wait_until(lambda: "replayed-one" in sink.delivered("a"), 10, "first delivery")

        def choose(worker: int, n: int) -> tuple[str, str, dict[str, Any]]:
            return "Finished Step", f"cli-{worker}-{n}", {"journeyId": f"cli-{worker}-{n % 8}"}

        replays = []
        with Load(gateway.url, choose, workers=3) as load:
            for _ in range(2):  # meanwhile, from another process
                replays.append(
                    subprocess.run(
                        [*REPLAY, "-c", str(path), "--event-id", "replayed-one"],
                        capture_output=True,
                        text=True,
                        timeout=30,
                        cwd=tmp_path,
                    )
                )
        assert all(r.returncode == 0 for r in replays), [r.stderr for r in replays]
        assert_everything_delivered(db, sink)
        wait_until(
            lambda: sink.delivered("a").count("replayed-one") >= 2, 10, "the replayed delivery"
        )
        counts: dict[str, int] = {}
        for key in sink.delivered("a"):
            counts[key] = counts.get(key, 0) + 1
        doubled = {k: c for k, c in counts.items() if c > 1 and k != "replayed-one"}
        assert not doubled, f"delivered more than once without a crash or replay: {doubled}"
        assert load.accepted() <= set(counts)
    finally:
        gateway.stop()

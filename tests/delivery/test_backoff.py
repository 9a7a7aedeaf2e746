"""The pure retry maths (backoff_delay, decide, RateLimiter) and the engine's attempt path
driven by an injected clock and random source: schedules of hours, no real waiting."""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config.load import load_config
from gateway.delivery import DeliveryEngine, RateLimiter
from gateway.delivery.claims import ClusterRateLimiter
from gateway.destinations.client import HttpClient
from gateway.errors import PermanentDeliveryError, RetryableDeliveryError
from gateway.events import parse_event
from gateway.retry import Backoff, Decision, DeliveryPolicy, backoff_delay, decide
from gateway.store import DueDelivery
from gateway.store.sqlite import SqliteStore
from tests.support.config import base_config, write_config
from tests.support.payloads import payload
from tests.support.sinks import MakeSink
from tests.support.store import attempts, deliveries

PRODUCTION = Backoff(initial=5.0, max=3600.0, multiplier=2.0, jitter=0.2)


# ------------------------------------------------------------------------- backoff_delay
def test_backoff_doubles_from_initial_and_caps_at_max() -> None:
    backoff = Backoff(initial=5.0, max=3600.0, multiplier=2.0, jitter=0.0)
    delays = [backoff_delay(n, backoff, 0.0) for n in range(1, 15)]
    assert delays == [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600, 3600, 3600]
    assert backoff_delay(10**6, backoff, 0.0) == 3600.0
    # attempt 0 (never attempted) cannot go below the initial delay
    assert backoff_delay(0, backoff, 0.0) == 5.0


def test_backoff_other_multiplier_and_constant_schedule() -> None:
    assert [backoff_delay(n, Backoff(1.0, 100.0, 3.0, 0.0), 0.0) for n in range(1, 8)] == [
        1,
        3,
        9,
        27,
        81,
        100,
        100,
    ]
    constant = Backoff(2.0, 60.0, 1.0, 0.0)
    assert {backoff_delay(n, constant, 0.0) for n in (1, 2, 50, 10**6)} == {2.0}


@pytest.mark.parametrize(
    ("rand", "factor"), [(0.0, 1.0), (0.25, 1.05), (0.5, 1.1), (1.0, 1.2), (-3.0, 1.0), (7.0, 1.2)]
)
def test_jitter_only_adds_up_to_jitter_times_the_delay(rand: float, factor: float) -> None:
    # out-of-range random values are clamped, never make the delay shorter or unbounded
    for attempt, base in ((1, 5.0), (4, 40.0), (30, 3600.0)):
        assert backoff_delay(attempt, PRODUCTION, rand) == pytest.approx(base * factor)


def test_retry_after_is_a_floor_capped_at_max_with_jitter_on_top() -> None:
    exact = Backoff(initial=5.0, max=3600.0, multiplier=2.0, jitter=0.0)
    assert backoff_delay(1, exact, 0.0, retry_after=120.0) == 120.0  # raises the floor
    assert backoff_delay(5, exact, 0.0, retry_after=1.0) == 80.0  # never lowers the backoff
    assert backoff_delay(1, exact, 0.0, retry_after=7200.0) == 3600.0  # capped at max
    assert backoff_delay(1, exact, 0.0, retry_after=0.0) == 5.0
    assert backoff_delay(1, exact, 0.0, retry_after=None) == 5.0
    # jitter adds on top of the server's floor, never below it
    assert backoff_delay(1, PRODUCTION, 0.0, retry_after=120.0) == 120.0
    assert backoff_delay(1, PRODUCTION, 1.0, retry_after=120.0) == pytest.approx(144.0)
    assert backoff_delay(1, PRODUCTION, 1.0, retry_after=1e9) == pytest.approx(4320.0)


sane_backoffs = st.builds(
    lambda initial, extra, multiplier, jitter: Backoff(
        initial, initial + extra, multiplier, jitter
    ),
    initial=st.floats(min_value=0.001, max_value=86400.0),
    extra=st.floats(min_value=0.0, max_value=30 * 86400.0),
    multiplier=st.floats(min_value=1.0, max_value=10.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    attempt=st.integers(min_value=1, max_value=10**6),
    backoff=sane_backoffs,
    rand=st.floats(min_value=0.0, max_value=1.0),
    retry_after=st.none() | st.floats(min_value=0.0, max_value=1e7),
)
def test_backoff_delay_is_total_and_bounded(
    attempt: int, backoff: Backoff, rand: float, retry_after: float | None
) -> None:
    delay = backoff_delay(attempt, backoff, rand, retry_after)
    assert math.isfinite(delay)
    low = min(backoff.initial, backoff.max)
    high = backoff.max * (1 + backoff.jitter)
    tolerance = 1e-9 * max(1.0, high)
    assert low - tolerance <= delay <= high + tolerance
    if retry_after:
        assert delay >= min(retry_after, backoff.max) - tolerance
    else:
        # the schedule never shrinks from one attempt to the next
        assert delay >= backoff_delay(max(1, attempt - 1), backoff, rand) - tolerance


@pytest.mark.parametrize("attempt", [1025, 10**6])
def test_backoff_delay_with_zero_initial_never_raises(attempt: int) -> None:
    assert backoff_delay(attempt, Backoff(0.0, 60.0, 2.0, 0.0), 0.5) == 0.0


# --------------------------------------------------------------------------------- decide
def policy(**overrides: Any) -> DeliveryPolicy:
    values: dict[str, Any] = {
        "max_attempts": 12,
        "backoff": Backoff(5.0, 3600.0, 2.0, 0.0),
        "max_age": 86400.0,
    }
    return DeliveryPolicy(**{**values, **overrides})


def test_decide_permanent_failure_is_dead_at_once_with_its_reason() -> None:
    error = PermanentDeliveryError("http_400", "HTTP 400", status=400)
    assert decide(policy(), 1, 1000.0, 1000.0, error, 0.0) == Decision("dead", "http_400")
    # even with every attempt and all the time left, and even on the last attempt
    assert decide(policy(max_attempts=100), 1, 0.0, 1.0, error, 0.5).outcome == "dead"
    assert decide(policy(), 12, 0.0, 1.0, error, 0.5) == Decision("dead", "http_400")


def test_decide_retryable_failure_schedules_the_backoff() -> None:
    error = RetryableDeliveryError("http_5xx", "HTTP 503", status=503)
    assert decide(policy(), 1, 1000.0, 1000.0, error, 0.0) == Decision("retry", "http_5xx", 1005.0)
    assert decide(policy(), 3, 1000.0, 1100.0, error, 0.0) == Decision("retry", "http_5xx", 1120.0)
    with_floor = RetryableDeliveryError("http_429", "HTTP 429", status=429, retry_after=300.0)
    assert decide(policy(), 1, 0.0, 10.0, with_floor, 0.0) == Decision("retry", "http_429", 310.0)


def test_decide_dead_when_max_attempts_reached() -> None:
    error = RetryableDeliveryError("timeout", "no answer")
    assert decide(policy(max_attempts=3), 2, 0.0, 10.0, error, 0.0).outcome == "retry"
    assert decide(policy(max_attempts=3), 3, 0.0, 10.0, error, 0.0) == Decision(
        "dead", "max_attempts (timeout)"
    )
    assert decide(policy(max_attempts=1), 1, 0.0, 0.0, error, 0.0) == Decision(
        "dead", "max_attempts (timeout)"
    )


def test_decide_dead_when_next_attempt_would_pass_max_age() -> None:
    error = RetryableDeliveryError("connection", "refused")
    aged = policy(max_age=100.0)
    assert decide(aged, 1, 0.0, 90.0, error, 0.0) == Decision("retry", "connection", 95.0)
    assert decide(aged, 1, 0.0, 95.0, error, 0.0) == Decision("retry", "connection", 100.0)
    assert decide(aged, 1, 0.0, 95.5, error, 0.0) == Decision("dead", "max_age (connection)")
    # jitter counts: the drawn delay is what must fit
    jittered = policy(max_age=100.0, backoff=Backoff(5.0, 3600.0, 2.0, 0.2))
    assert decide(jittered, 1, 0.0, 95.0, error, 1.0) == Decision("dead", "max_age (connection)")
    # a Retry-After floor beyond max_age kills it as well
    floor = RetryableDeliveryError("http_5xx", "HTTP 503", status=503, retry_after=200.0)
    assert decide(
        policy(max_age=100.0, backoff=Backoff(5.0, 3600.0, 2.0, 0.0)), 1, 0.0, 0.0, floor, 0.0
    ) == Decision("dead", "max_age (http_5xx)")


# ---------------------------------------------------------------------------- RateLimiter
async def test_rate_limiter_spaces_concurrent_waiters_evenly() -> None:
    limiter = RateLimiter((50.0, 1.0))
    assert limiter.interval == pytest.approx(0.02)
    loop = asyncio.get_running_loop()
    start = loop.time()
    stamps: list[float] = []

    async def one() -> None:
        await limiter.wait()
        stamps.append(loop.time() - start)

    await asyncio.gather(*(one() for _ in range(6)))
    stamps.sort()
    # a timer never fires early, so the k-th send goes no sooner than k intervals in (gaps
    # between two wake-ups are not guaranteed: a busy loop may wake a late one beside the next)
    for k, stamp in enumerate(stamps):
        assert stamp >= k * limiter.interval - 0.005, stamps
    assert stamps[-1] < 1.0


async def test_rate_limiter_gives_concurrent_waiters_consecutive_slots() -> None:
    """The same on an injected clock that stands still: each waiter sleeps exactly until its
    own slot, one interval after the previous one's."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    limiter = RateLimiter((50.0, 1.0), clock=lambda: 100.0, sleep=sleep)
    await asyncio.gather(*(limiter.wait() for _ in range(6)))
    assert sorted(slept) == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.10])  # the first: no wait


async def test_rate_limiter_schedules_sends_exactly_one_interval_apart() -> None:
    """The spacing itself, on an injected clock: no wall-clock tolerance to widen under load."""
    now = [100.0]
    started: list[float] = []

    async def sleep(seconds: float) -> None:
        assert seconds > 0
        now[0] += seconds  # time passes only while someone waits
        await asyncio.sleep(0)

    limiter = RateLimiter((5.0, 1.0), clock=lambda: now[0], sleep=sleep)

    async def send() -> None:
        await limiter.wait()
        started.append(now[0])

    for _ in range(5):  # one after the other, as one worker sends
        await send()
    assert started == pytest.approx([100.0, 100.2, 100.4, 100.6, 100.8])
    now[0] += 10.0  # idle for a while: the next send goes at once, no burst is saved up
    await send()
    await send()
    assert started[5:] == pytest.approx([110.8, 111.0])


async def test_a_retired_rate_limiter_lets_its_sleepers_go_at_once() -> None:
    limiter = RateLimiter((1.0, 3600.0))  # 1/h
    assert await limiter.wait()  # the first slot is now
    sleeping = asyncio.ensure_future(limiter.wait())  # the next is an hour away
    await asyncio.sleep(0.05)
    assert not sleeping.done()
    limiter.retire()  # a reload changed the rate
    assert await asyncio.wait_for(sleeping, 5) is False  # the worker waits on the new one
    assert await asyncio.wait_for(limiter.wait(), 5) is False  # and never again on this one


async def test_a_cluster_limiter_that_replaces_another_starts_the_new_spacing_now(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "gateway.db")
    await store.open()
    try:
        old = ClusterRateLimiter((1.0, 3600.0), store, "slack")  # 1/h
        assert await old.wait()
        await store.reserve_rate_slot("slack", 3600.0)  # another worker's slot, an hour ahead
        new = ClusterRateLimiter((1.0, 1.0), store, "slack", replaces=old)
        # booked behind the old slots it would sleep two hours
        assert await asyncio.wait_for(new.wait(), 5)
        assert 0.5 < await store.reserve_rate_slot("slack", 1.0) < 1.5
    finally:
        await store.close()


async def test_no_rate_limit_never_waits() -> None:
    limiter = RateLimiter(None)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(100):
        await limiter.wait()
    assert loop.time() - start < 0.05


# -------------------------------------------------- the engine's attempts on a fake clock
class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def simulate(
    tmp_path: Path, sink_url: str, delivery: dict[str, Any], rand: float, start: float = 1_000_000.0
) -> tuple[list[float], Path, FakeClock]:
    """Run one delivery to exhaustion through the real store and engine.attempt, moving a
    fake clock to each scheduled attempt. Returns the delays between attempts."""
    config = load_config(
        write_config(
            tmp_path,
            base_config(
                tmp_path,
                delivery=delivery,
                destinations={"svc": {"type": "http", "url": sink_url}},
                rules=[{"name": "all", "to": ["svc"]}],
            ),
        )
    )
    destination = config.destinations["svc"]
    clock = FakeClock(start)
    store = SqliteStore(tmp_path / "sim.db")
    await store.open()
    delays: list[float] = []
    try:
        async with HttpClient() as client:
            engine = DeliveryEngine(
                store,
                destinations=lambda: dict(config.destinations),
                default_policy=lambda: config.delivery,
                client=client,
                clock=clock,
                rand=lambda: rand,
            )
            event = parse_event(payload(event_id="sim-1"))
            await store.accept(event, [("svc", "all")], ["all"], None, {}, received_at=clock.now)
            for _ in range(100):
                due = await store.due("svc", clock.now, 10, True)
                if not due:
                    break
                assert len(due) == 1
                record = await engine.attempt(destination, due[0])
                await store.record([record])
                if record.outcome != "retry":
                    break
                assert record.next_attempt_at is not None
                delays.append(record.next_attempt_at - clock.now)
                # not due a moment before its time, due at its time
                assert await store.due("svc", record.next_attempt_at - 0.001, 10, True) == []
                clock.now = record.next_attempt_at
    finally:
        await store.close()
    return delays, tmp_path / "sim.db", clock


def final_row(db: Path) -> tuple[Any, ...]:
    (row,) = deliveries(db)
    return row["status"], row["attempts"], row["reason"]


async def test_long_schedule_runs_to_max_attempts_on_a_fake_clock(
    tmp_path: Path, make_sink: MakeSink
) -> None:
    sink = await make_sink(default=503)
    delivery = {
        "max_attempts": 12,
        "backoff": {"initial": "5s", "max": "1h", "multiplier": 2, "jitter": 0.2},
        "max_age": "24h",
    }
    delays, db, _ = await simulate(tmp_path, sink.url, delivery, rand=0.5)
    expected = [min(3600.0, 5.0 * 2**n) * 1.1 for n in range(11)]
    assert delays == pytest.approx(expected)
    assert len(sink.received) == 12
    assert final_row(db) == ("dead", 12, "max_attempts (http_5xx)")
    outcomes = [outcome for _, outcome, _, _ in attempts(db)]
    assert outcomes == ["retry"] * 11 + ["dead"]


async def test_long_schedule_dies_of_max_age_on_a_fake_clock(
    tmp_path: Path, make_sink: MakeSink
) -> None:
    sink = await make_sink(default=503)
    delivery = {
        "max_attempts": 100,
        "backoff": {"initial": "5s", "max": "1h", "multiplier": 2, "jitter": 0.2},
        "max_age": "1h",
    }
    delays, db, clock = await simulate(tmp_path, sink.url, delivery, rand=0.5, start=5_000.0)
    # 5.5 + 11 + ... + 1408 = 2810.5 s; the next (2816 s) would land past 3600 s
    assert delays == pytest.approx([5.0 * 2**n * 1.1 for n in range(9)])
    assert clock.now - 5_000.0 == pytest.approx(2810.5)
    assert len(sink.received) == 10
    assert final_row(db) == ("dead", 10, "max_age (http_5xx)")


@pytest.mark.parametrize(
    ("answer", "expected_delay"),
    [
        ((503, {"Retry-After": "600"}, "busy"), 600 * 1.1),
        # header names are case-insensitive (proxies speaking HTTP/2 send them lowercase)
        ((503, {"retry-after": "600"}, "busy"), 600 * 1.1),
        ((429, {"Retry-After": "7200"}, "slow down"), 3600 * 1.1),  # capped at backoff.max
        ((429, {"Retry-After": "1"}, "slow down"), 5 * 1.1),  # below the backoff: no effect
        ((429, {"Retry-After": "soon"}, "slow down"), 5 * 1.1),  # garbled: ignored
        ((500, {"Retry-After": "600"}, "oops"), 5 * 1.1),  # only honoured on 429/503
        ("http-date", 900 * 1.1),
    ],
)
async def test_retry_after_on_a_fake_clock(
    tmp_path: Path, make_sink: MakeSink, answer: Any, expected_delay: float
) -> None:
    start = 1_700_000_000.0
    if answer == "http-date":
        when = email.utils.formatdate(start + 900, usegmt=True)
        answer = (503, {"Retry-After": when}, "busy")
    sink = await make_sink(responses=[answer], default=200)
    delivery = {
        "max_attempts": 12,
        "backoff": {"initial": "5s", "max": "1h", "multiplier": 2, "jitter": 0.2},
    }
    delays, db, _ = await simulate(tmp_path, sink.url, delivery, rand=0.5, start=start)
    assert delays == pytest.approx([expected_delay])
    assert final_row(db) == ("delivered", 2, None)


async def test_zero_initial_backoff_attempt_still_records(
    tmp_path: Path, make_sink: MakeSink
) -> None:
    sink = await make_sink(default=503)
    config = load_config(
        write_config(
            tmp_path,
            base_config(
                tmp_path,
                delivery={"max_attempts": 5000, "backoff": {"initial": "0s", "max": "1m"}},
                destinations={"svc": {"type": "http", "url": sink.url}},
                rules=[{"name": "all", "to": ["svc"]}],
            ),
        )
    )
    store = SqliteStore(tmp_path / "zero.db")
    async with HttpClient() as client:
        engine = DeliveryEngine(
            store,
            destinations=lambda: dict(config.destinations),
            default_policy=lambda: config.delivery,
            client=client,
        )
        job = DueDelivery(1, 1, "svc", 1024, time.time(), payload(event_id="zero-1"), "all")
        record = await engine.attempt(config.destinations["svc"], job)
    assert len(sink.received) == 1
    assert (record.number, record.outcome, record.reason) == (1025, "retry", "http_5xx")

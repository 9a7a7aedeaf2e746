"""Prometheus metrics (prefix idwise_gateway_). No I/O of its own; /metrics renders them.

Label values are bounded sets (event types, outcomes, reasons, destination names); never ids
or URLs. Every labelled series an alert or a dashboard relies on exists at 0 from the moment
a config is loaded (`prime`): `increase()` over a series that appears with its first
increment sees nothing, so the first dead delivery of a destination would raise no alert.
"""

from __future__ import annotations

import platform
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway import __version__, idwise

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "idwise_gateway_"
#: outcomes of one delivery attempt (gateway.delivery) and of one received webhook
#: (gateway.handlers); the label values of deliveries_total and webhooks_received_total
DELIVERY_OUTCOMES = ("delivered", "retry", "dead")
WEBHOOK_OUTCOMES = ("accepted", "duplicate", "overloaded", "store_error")
#: reasons a request is refused before storing (AuthError, PayloadError and the handlers'
#: own), the label values of requests_rejected_total; a reason missing here still counts,
#: its series merely appears with its first increment
REJECT_REASONS = (
    "ip_denied",
    "unauthorized",
    "too_large",
    "truncated_body",
    "body_timeout",
    "unsupported_encoding",
    "invalid_utf8",
    "invalid_json",
    "not_object",
    "missing_event",
    "missing_body",
    "shutting_down",
    "malformed_request",  # HTTP aiohttp could not parse (gateway.web.connections)
)
#: label value for event types that IDWise does not document
OTHER_EVENT = "other"

# `_created` series double the number of series for no use a Prometheus user has (counter
# resets are detected from the values); this is process-wide in prometheus-client.
disable_created_metrics()  # type: ignore[no-untyped-call]


class _StoreCollector(Collector):
    """The store writer's running counts, read from the store at scrape time as counters."""

    def __init__(self) -> None:
        self.stats: Callable[[], tuple[int, int]] | None = None

    def collect(self) -> Iterator[Metric]:
        if self.stats is None:
            return
        commits, jobs = self.stats()
        yield CounterMetricFamily(
            PREFIX + "store_commits", "Group commits done by the store writer", value=commits
        )
        yield CounterMetricFamily(
            PREFIX + "store_jobs", "Jobs committed by the store writer", value=jobs
        )


class _BuildInfoCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            PREFIX + "build_info",
            "Always 1; the labels name the gateway's version and the Python running it",
            labels=["version", "python"],
        )
        info.add_metric([__version__, platform.python_version()], 1)
        yield info


class RecentCounts:
    """Counts per minute over the last day, for "in the last hour / day" figures of this
    process (the console's refused webhooks, which the store never sees)."""

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self.started = clock()
        self._minutes: deque[list[int]] = deque(maxlen=24 * 60)  # [minute, count]

    def add(self, count: int = 1) -> None:
        minute = int(self._clock() // 60)
        if self._minutes and self._minutes[-1][0] == minute:
            self._minutes[-1][1] += count
        else:
            self._minutes.append([minute, count])

    def within(self, seconds: float) -> int:
        first = int((self._clock() - seconds) // 60)
        return sum(count for minute, count in self._minutes if minute > first)


@dataclass(slots=True)
class DestinationHealth:
    """What this process saw of a destination's attempts: the console's healthy / retrying /
    failing since. `failing_since` is the first failure after the last success."""

    last_outcome: str | None = None
    last_at: float | None = None
    last_success: float | None = None
    failing_since: float | None = None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        p = PREFIX
        self.webhooks = Counter(
            p + "webhooks_received_total", "Webhooks received", ["event", "outcome"], registry=r
        )
        self.rejected = Counter(
            p + "requests_rejected_total", "Requests refused before storing", ["reason"], registry=r
        )
        self.deliveries = Counter(
            p + "deliveries_total",
            "Delivery attempts by outcome",
            ["destination", "outcome"],
            registry=r,
        )
        self.duration = Histogram(
            p + "delivery_duration_seconds",
            "Duration of one delivery attempt",
            ["destination"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.pending = Gauge(
            p + "deliveries_pending",
            "Deliveries waiting to be delivered",
            ["destination"],
            registry=r,
        )
        self.oldest = Gauge(
            p + "oldest_pending_delivery_age_seconds",
            "Age of the oldest pending delivery",
            registry=r,
        )
        self.reload_ok = Gauge(
            p + "config_last_reload_successful",
            "1 if the last config (re)load succeeded",
            registry=r,
        )
        self.reload_time = Gauge(
            p + "config_last_reload_success_timestamp_seconds",
            "Time of the last successful config load",
            registry=r,
        )
        self.store_writable = Gauge(
            p + "store_writable",
            "1 if the store committed a heartbeat write at the last check (every scrape)",
            registry=r,
        )
        self.connections_refused = Counter(
            p + "connections_refused_total",
            "Connections refused at once because the listener had server.max_connections open",
            ["listener"],
            registry=r,
        )
        self._store = _StoreCollector()
        r.register(self._store)
        r.register(_BuildInfoCollector())
        self.refused_recent = RecentCounts()
        self.health: dict[str, DestinationHealth] = {}
        self._known_destinations: set[str] = set()
        self._webhook_children: dict[tuple[str, str], Counter] = {}
        self._delivery_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def prime(
        self, destination_names: Iterable[str], event_types: Iterable[str] = idwise.EVENT_TYPES
    ) -> None:
        """Create every series of the configured destinations and event types at 0.

        Call it whenever a config is loaded (start and every successful reload): series that
        exist keep their values, new destinations get theirs."""
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        for event_type in (*event_types, OTHER_EVENT):
            for outcome in WEBHOOK_OUTCOMES:
                self._webhook_child(event_type, outcome)
        names = set(destination_names)
        for name in names:
            for outcome in DELIVERY_OUTCOMES:
                self.deliveries.labels(name, outcome)
            self.duration.labels(name)
        for name in names - self._known_destinations:
            self.pending.labels(name).set(0)
        self._known_destinations |= names

    def watch_store(self, stats: Callable[[], tuple[int, int]]) -> None:
        """`stats` returns the store writer's (commits, jobs) so far; read at every scrape."""
        self._store.stats = stats

    def _webhook_child(self, label: str, outcome: str) -> Counter:
        child = self._webhook_children.get((label, outcome))
        if child is None:  # labels() costs a lock and a lookup; this runs for every webhook
            child = self._webhook_children[(label, outcome)] = self.webhooks.labels(label, outcome)
        return child

    def webhook(self, event_type: str, outcome: str) -> None:
        # unknown event types are folded so a sender cannot blow up label cardinality
        label = event_type if event_type in idwise.EVENT_FIELDS else OTHER_EVENT
        self._webhook_child(label, outcome).inc()

    def reject(self, reason: str) -> None:
        self.rejected.labels(reason).inc()
        self.refused_recent.add()

    def delivery(self, destination: str, outcome: str, seconds: float) -> None:
        # children resolved once per (destination, outcome): labels() costs a lock and a
        # lookup, and this runs for every attempt
        children = self._delivery_children.get((destination, outcome))
        if children is None:
            children = self._delivery_children[(destination, outcome)] = (
                self.deliveries.labels(destination, outcome),
                self.duration.labels(destination),
            )
        children[0].inc()
        children[1].observe(seconds)
        health = self.health.get(destination)
        if health is None:
            health = self.health[destination] = DestinationHealth()
        now = time.time()
        health.last_outcome, health.last_at = outcome, now
        if outcome == "delivered":
            health.last_success, health.failing_since = now, None
        elif health.failing_since is None:
            health.failing_since = now

    def set_pending(self, counts: dict[str, int], oldest_age: float) -> None:
        for name in self._known_destinations - set(counts):
            self.pending.labels(name).set(0)
        for name, count in counts.items():
            self.pending.labels(name).set(count)
        self._known_destinations |= set(counts)
        self.oldest.set(oldest_age)

    def render(self) -> bytes:
        return generate_latest(self.registry)

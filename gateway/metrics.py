"""Prometheus metrics (prefix idwise_gateway_). No I/O of its own; /metrics renders them.

Label values are bounded sets (event types, outcomes, reasons, destination names); never ids
or URLs.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from gateway import idwise

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        p = "idwise_gateway_"
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
        self.store_batches = Gauge(
            p + "store_commits", "Group commits done by the store writer", registry=r
        )
        self.store_jobs = Gauge(p + "store_jobs", "Jobs committed by the store writer", registry=r)
        self._known_destinations: set[str] = set()
        self._webhook_children: dict[tuple[str, str], Any] = {}

    def webhook(self, event_type: str, outcome: str) -> None:
        # unknown event types are folded so a sender cannot blow up label cardinality
        label = event_type if event_type in idwise.EVENT_FIELDS else "other"
        child = self._webhook_children.get((label, outcome))
        if child is None:  # labels() costs a lock and a lookup; this runs for every webhook
            child = self._webhook_children[(label, outcome)] = self.webhooks.labels(label, outcome)
        child.inc()

    def reject(self, reason: str) -> None:
        self.rejected.labels(reason).inc()

    def delivery(self, destination: str, outcome: str, seconds: float) -> None:
        self.deliveries.labels(destination, outcome).inc()
        self.duration.labels(destination).observe(seconds)

    def set_pending(self, counts: dict[str, int], oldest_age: float) -> None:
        for name in self._known_destinations - set(counts):
            self.pending.labels(name).set(0)
        for name, count in counts.items():
            self.pending.labels(name).set(count)
        self._known_destinations |= set(counts)
        self.oldest.set(oldest_age)

    def render(self) -> bytes:
        return generate_latest(self.registry)

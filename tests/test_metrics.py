"""Metrics as Prometheus sees them: a real scrape of a real gateway process's /metrics."""

from __future__ import annotations

import platform
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__, idwise
from gateway.metrics import DELIVERY_OUTCOMES, REJECT_REASONS, WEBHOOK_OUTCOMES
from tests.support.config import base_config, write_config
from tests.support.payloads import payload
from tests.support.process import gateway_process, get, post
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow  # real gateway processes

P = "idwise_gateway_"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(admin: str) -> tuple[Samples, dict[str, str]]:
    """Every sample of one scrape by (name, labels), and every family's type."""
    status, body = get(admin + "/metrics")
    assert status == 200
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(body.decode()):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((P + name, frozenset(labels.items())))


def script(tmp_path: Path, name: str, exit_code: int = 0) -> dict[str, Any]:
    path = tmp_path / f"{name}.sh"
    path.write_text(f"#!/bin/sh\ncat > /dev/null\nexit {exit_code}\n")
    path.chmod(0o755)
    return {"type": "script", "command": [str(path)], "timeout": "5s"}


def test_every_series_exists_at_zero_once_the_config_is_loaded(tmp_path: Path) -> None:
    config = base_config(
        tmp_path,
        destinations={"audit": script(tmp_path, "audit"), "crm": script(tmp_path, "crm")},
        rules=[{"name": "all", "to": ["audit"]}],
    )
    with gateway_process(write_config(tmp_path, config)) as gateway:
        samples, types = scrape(gateway.admin)
    for destination in ("audit", "crm"):  # crm is named by no rule: its series exist anyway
        for outcome in DELIVERY_OUTCOMES:
            assert value(samples, "deliveries_total", destination=destination, outcome=outcome) == 0
        assert value(samples, "deliveries_pending", destination=destination) == 0
        assert value(samples, "delivery_duration_seconds_count", destination=destination) == 0
    for event_type in (*idwise.EVENT_TYPES, "other"):
        for outcome in WEBHOOK_OUTCOMES:
            assert value(samples, "webhooks_received_total", event=event_type, outcome=outcome) == 0
    for reason in REJECT_REASONS:
        assert value(samples, "requests_rejected_total", reason=reason) == 0
    assert types[P + "deliveries"] == "counter"
    assert types[P + "webhooks_received"] == "counter"


def test_a_destination_added_by_reload_gets_its_series_and_old_counts_stay(
    tmp_path: Path,
) -> None:
    config = base_config(
        tmp_path,
        destinations={"audit": script(tmp_path, "audit")},
        rules=[{"name": "all", "to": ["audit"]}],
    )
    path = write_config(tmp_path, config)
    with gateway_process(path) as gateway:
        assert post(gateway.url, payload("Finished Journey"))[0] == 200
        wait_until(
            lambda: (
                value(
                    scrape(gateway.admin)[0],
                    "deliveries_total",
                    destination="audit",
                    outcome="delivered",
                )
                == 1
            )
        )
        config["destinations"]["risk"] = script(tmp_path, "risk")
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        status, body = post(gateway.admin + "/-/reload", b"", headers={})
        assert status == 200, body
        samples, _ = scrape(gateway.admin)
    for outcome in DELIVERY_OUTCOMES:
        assert value(samples, "deliveries_total", destination="risk", outcome=outcome) == 0
    assert value(samples, "deliveries_pending", destination="risk") == 0
    assert value(samples, "deliveries_total", destination="audit", outcome="delivered") == 1
    assert (
        value(samples, "webhooks_received_total", event="Finished Journey", outcome="accepted") == 1
    )


def test_store_counts_are_counters_and_grow_with_commits(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    with gateway_process(write_config(tmp_path, config)) as gateway:
        before, types = scrape(gateway.admin)
        for number in range(3):
            body = payload("Finished Step", eventId=f"store-{number}")
            assert post(gateway.url, body)[0] == 200
        after, _ = scrape(gateway.admin)
    for name in ("store_commits", "store_jobs"):
        assert types[P + name] == "counter"
        assert value(before, name + "_total") is not None
        assert value(after, name + "_total") >= value(before, name + "_total") + 1  # type: ignore[operator]
    assert value(after, "store_jobs_total") >= 3  # type: ignore[operator]
    assert (P + "store_commits", frozenset()) not in after  # the old gauge is gone


def test_build_info_and_no_created_series(tmp_path: Path) -> None:
    config = base_config(tmp_path, destinations={"audit": script(tmp_path, "audit")})
    with gateway_process(write_config(tmp_path, config)) as gateway:
        samples, types = scrape(gateway.admin)
    assert value(samples, "build_info", version=__version__, python=platform.python_version()) == 1
    assert types[P + "build_info"] == "gauge"
    assert [name for name, _ in samples if name.endswith("_created")] == []


def test_store_writable_follows_the_store(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    with gateway_process(write_config(tmp_path, config)) as gateway:
        assert value(scrape(gateway.admin)[0], "store_writable") == 1
        # the fault itself: another connection holds the write lock (raw SQL on purpose)
        blocker = sqlite3.connect(tmp_path / "gateway.db", timeout=5, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            wait_until(lambda: value(scrape(gateway.admin)[0], "store_writable") == 0, timeout=15)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        wait_until(lambda: value(scrape(gateway.admin)[0], "store_writable") == 1, timeout=15)

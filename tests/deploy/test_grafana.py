"""deploy/grafana/: the dashboard is valid JSON and every query selects metrics that a real
gateway exports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.promql import metric_names
from tests.support.config import DEPLOY
from tests.support.scrape import Scrape

DASHBOARDS = sorted((DEPLOY / "grafana").glob("*.json"))


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target, template variable and annotation."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            # label_values(<selector>, label): the selector is the PromQL part
            inner = query.removeprefix("label_values(").rsplit(",", 1)[0]
            yield f"variable {variable['name']}", inner
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["expr"]


def test_there_is_a_dashboard() -> None:
    assert [path.name for path in DASHBOARDS] == ["idwise-gateway.json"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_valid_json_with_unique_panel_ids(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        # every panel queries the data source variable, never a fixed uid of someone's Grafana
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.slow
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_selects_exported_metrics(path: Path, live_scrape: Scrape) -> None:
    dashboard = json.loads(path.read_text())
    found = list(queries(dashboard))
    assert len(found) >= 10
    used: set[str] = set()
    for where, expr in found:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        missing = names - live_scrape.names
        assert not missing, f"{where}: {sorted(missing)} not exported by the gateway"
        used |= names
    # the dashboard shows the figures the alerts are about
    assert {
        "idwise_gateway_deliveries_total",
        "idwise_gateway_deliveries_pending",
        "idwise_gateway_oldest_pending_delivery_age_seconds",
        "idwise_gateway_requests_rejected_total",
        "idwise_gateway_store_writable",
        "idwise_gateway_config_last_reload_successful",
    } <= used


def test_the_metric_name_extraction_sees_what_it_should() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (destination, le) (rate(idwise_gateway_x_bucket"
        '{instance=~"$instance", outcome="dead"}[$__rate_interval]))) / on (job) group_left '
        "sum without (reason) (increase(other_total[10m])) > bool 0.5 and up"
    )
    assert metric_names(expr) == {"idwise_gateway_x_bucket", "other_total", "up"}

"""deploy/prometheus/: the alert rules pass promtool and their own unit tests, and the
gateway's real /metrics passes `promtool check metrics`.

promtool comes from Debian's `prometheus` package (`.ci/run` installs it). These tests fail
when it is missing rather than skip: a skipped rules test looks green while nothing checks
the alerts.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.promql import metric_names
from tests.support.config import DEPLOY
from tests.support.scrape import Scrape

RULES = DEPLOY / "prometheus" / "alerts.yaml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts.test.yaml"
#: the alerts alerts.yaml must carry (issue: dead deliveries, oldest pending age, a failing
#: destination, reload failed, store not writable, a spike of refused webhooks)
EXPECTED_ALERTS = {
    "IDWiseGatewayDeliveriesDead",
    "IDWiseGatewayDeliveryBacklogOld",
    "IDWiseGatewayDestinationFailing",
    "IDWiseGatewayConfigReloadFailed",
    "IDWiseGatewayStoreNotWritable",
    "IDWiseGatewayWebhooksRefused",
}


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    assert path, "promtool not found: install Debian's `prometheus` package (.ci/run does)"
    return subprocess.run(
        [path, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_firing() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    alerts = {rule["alert"] for rule in rules()}
    assert alerts >= EXPECTED_ALERTS
    assert fired == alerts


@pytest.mark.slow
def test_promtool_check_metrics_on_a_live_scrape(live_scrape: Scrape) -> None:
    result = promtool("check", "metrics", stdin=live_scrape.text)
    # promtool prints lint problems (e.g. a counter without _total) and exits non-zero
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


@pytest.mark.slow
def test_rules_only_read_metrics_the_gateway_exports(live_scrape: Scrape) -> None:
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= live_scrape.names, (rule["alert"], names - live_scrape.names)

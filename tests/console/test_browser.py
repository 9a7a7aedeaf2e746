"""The console in a real browser against a real gateway process, store and sink: sign in,
find an event by journey id, see why a rule did not match, replay a dead delivery and see it
arrive, send a test event; a payload's <script> never runs, a form without its CSRF token is
refused, a viewer cannot replay.

With CONSOLE_SCREENSHOTS=DIR the same run saves a screenshot of each page into DIR
(docs/img for docs/console.md).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.console.browser import chromium
from tests.console.conftest import ADMIN, OPERATOR, VIEWER
from tests.support.config import base_config, write_config
from tests.support.payloads import payload
from tests.support.process import gateway_process, post
from tests.support.sinks import SinkLoop
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

SCRIPT = "<script>window.__pwned=1;document.title='pwned'</script>"
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")


def shot(driver: webdriver.Chrome, name: str) -> None:
    """The whole page (the window grows to it, within reason), then the window as it was."""
    if not SHOTS:
        return
    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    size = driver.get_window_size()
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size["width"], min(max(int(height) + 120, 600), 2400))
    driver.save_screenshot(str(Path(SHOTS) / f"console-{name}.png"))
    driver.set_window_size(size["width"], size["height"])


def wait(driver: webdriver.Chrome, condition: Callable[[Any], Any], timeout: float = 10) -> Any:
    # a page being replaced by the next one leaves stale elements behind: look again
    ignored = (StaleElementReferenceException, NoSuchElementException)
    return WebDriverWait(driver, timeout, ignored_exceptions=ignored).until(condition)


def sign_in(driver: webdriver.Chrome, admin: str, token: str) -> None:
    driver.get(admin + "/")
    wait(driver, expected_conditions.title_contains("Sign in"))
    field = driver.find_element(By.ID, "token")
    field.send_keys(token, Keys.ENTER)  # the keyboard alone signs in
    wait(driver, expected_conditions.title_contains("Overview"))


def test_console_end_to_end_in_a_browser(tmp_path: Path, sinks: SinkLoop) -> None:
    sink = sinks.start(responses=[400])  # the first delivery dies (a permanent 400)
    config = base_config(
        tmp_path,
        admin=ADMIN,
        destinations={
            "risk-api": {"type": "http", "url": sink.url, "delivery": {"max_attempts": 2}},
        },
        rules=[
            {
                "name": "referred-to-risk",
                "events": ["Finished Journey"],
                "when": "body.systemDecision == 'Refer'",
                "to": ["risk-api"],
            }
        ],
    )
    with gateway_process(write_config(tmp_path, config)) as gateway:
        dead = payload(
            "Finished Journey",
            eventId="ev-dead",
            journeyId="journey-dead",
            systemDecision="Refer",
        )
        assert post(gateway.url, dead)[0] == 200
        wait_until(lambda: len(sink.received) == 1)
        found = payload(
            "Finished Journey",
            eventId="ev-find",
            journeyId="journey-find-me",
            systemDecision="Complete",
        )
        assert post(gateway.url, found)[0] == 200
        hostile = payload(
            "Finished Journey", eventId="ev-xss", journeyId="journey-xss", referenceNo=SCRIPT
        )
        assert post(gateway.url, hostile)[0] == 200
        with chromium(tmp_path / "profile") as driver:
            _operator_walk(driver, gateway.admin, sink)
            _viewer_cannot_replay(driver, gateway.admin)
        audit = [line for line in gateway.log_lines() if line.get("msg_kind") == "audit"]
        actions = [line["action"] for line in audit]
        assert "replay" in actions and "test event" in actions and "sign-in" in actions
        assert OPERATOR not in gateway.logs() and VIEWER not in gateway.logs()


def _operator_walk(driver: webdriver.Chrome, admin: str, sink: Any) -> None:
    sign_in(driver, admin, OPERATOR)
    wait(driver, lambda d: "risk-api" in d.find_element(By.ID, "live").text)
    shot(driver, "overview")

    # find an event by its journey id, open it, see why the rule did not match
    driver.find_element(By.LINK_TEXT, "Events").click()
    wait(driver, expected_conditions.title_contains("Events"))
    shot(driver, "events")
    driver.find_element(By.NAME, "journey").send_keys("journey-find-me", Keys.ENTER)
    # the unfiltered page stays on screen until the filtered one replaces it: wait for that one
    wait(driver, expected_conditions.url_contains("journey=journey-find-me"))
    rows = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "tr.event"))
    assert len(rows) == 1, [row.text for row in rows]
    rows[0].find_element(By.TAG_NAME, "a").click()
    wait(driver, expected_conditions.title_contains("Event "))
    rule = driver.find_element(By.CSS_SELECTOR, "table.rules tbody tr")
    assert "referred-to-risk" in rule.text and "no" in rule.text
    why = rule.find_element(By.CSS_SELECTOR, "td.why").text
    assert "body.systemDecision == 'Refer'" in why and "false" in why, why
    shot(driver, "event")

    # a payload carrying <script> shows as text and never runs
    driver.get(admin + "/events?journey=journey-xss")
    driver.find_element(By.CSS_SELECTOR, "tr.event a").click()
    wait(driver, expected_conditions.title_contains("Event "))
    assert SCRIPT in driver.find_element(By.CSS_SELECTOR, "pre.payload").text
    assert driver.execute_script("return window.__pwned === undefined") is True
    assert "pwned" not in driver.title

    # a form whose CSRF token is gone is refused
    driver.get(admin + "/deliveries?status=dead")
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "button[name=delivery]"))
    shot(driver, "dead-letters")
    driver.execute_script("document.querySelector('#replay input[name=csrf]').remove()")
    driver.find_element(By.CSS_SELECTOR, "button[name=delivery]").click()
    wait(driver, lambda d: "CSRF" in d.find_element(By.TAG_NAME, "main").text)
    assert len(sink.received) == 1

    # replay the dead delivery: a confirmation first, then it arrives at the sink
    driver.get(admin + "/deliveries?status=dead")
    driver.find_element(By.CSS_SELECTOR, "button[name=delivery]").click()
    wait(driver, expected_conditions.title_contains("confirm"))
    assert "1 delivery affected" in driver.find_element(By.TAG_NAME, "main").text
    shot(driver, "confirm")
    assert len(sink.received) == 1
    driver.find_element(By.CSS_SELECTOR, "button.primary").click()
    wait(driver, expected_conditions.title_contains("Replayed"))
    wait_until(lambda: len(sink.received) == 2)
    assert json.loads(sink.received[1].body)["body"]["eventId"] == "ev-dead"
    driver.get(admin + "/events?journey=journey-dead")
    driver.find_element(By.CSS_SELECTOR, "tr.event a").click()

    def delivered(d: webdriver.Chrome) -> bool:
        d.refresh()
        return "delivered" in d.find_element(By.CSS_SELECTOR, ".delivery h3").text

    wait(driver, delivered)

    # a test event through the destination, for real
    driver.find_element(By.LINK_TEXT, "Destinations").click()
    wait(driver, expected_conditions.title_contains("Destinations"))
    shot(driver, "destinations")
    driver.find_element(By.CSS_SELECTOR, "#destination-risk-api button[type=submit]").click()
    wait(driver, expected_conditions.title_contains("Test event"))
    assert "Delivered" in driver.find_element(By.TAG_NAME, "main").text
    assert json.loads(sink.received[-1].body)["body"]["eventId"].startswith("console-test-")
    shot(driver, "test-event")

    # the playground explains a pasted payload without sending anything
    count = len(sink.received)
    driver.find_element(By.LINK_TEXT, "Rules playground").click()
    wait(driver, expected_conditions.title_contains("Rules playground"))
    area = driver.find_element(By.ID, "payload")
    area.clear()
    area.send_keys(payload("Finished Journey", systemDecision="Refer").decode())
    driver.find_element(By.CSS_SELECTOR, "button.primary").click()
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "details.rendered"))
    assert "risk-api" in driver.find_element(By.CSS_SELECTOR, "details.rendered summary").text
    shot(driver, "playground")
    time.sleep(0.3)
    assert len(sink.received) == count

    # the overview refreshes itself without a page load
    driver.get(admin + "/")
    marker = driver.execute_script("window.__same_page = 1; return 1")
    stamp = driver.find_element(By.CSS_SELECTOR, "#live .refreshed").text
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#live .refreshed").text != stamp, 15)
    assert driver.execute_script("return window.__same_page") == marker
    if SHOTS:
        driver.set_window_size(390, 844)
        driver.get(admin + "/events")
        shot(driver, "phone")
        driver.set_window_size(1280, 1000)
        dark = [{"name": "prefers-color-scheme", "value": "dark"}]
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": dark})
        driver.get(admin + "/")
        shot(driver, "dark")
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    driver.find_element(By.CSS_SELECTOR, "form.who button").click()
    wait(driver, expected_conditions.title_contains("Sign in"))


def _viewer_cannot_replay(driver: webdriver.Chrome, admin: str) -> None:
    sign_in(driver, admin, VIEWER)
    driver.get(admin + "/deliveries?status=delivered")  # not a tab: refused politely
    driver.get(admin + "/events?journey=journey-dead")
    driver.find_element(By.CSS_SELECTOR, "tr.event a").click()
    wait(driver, expected_conditions.title_contains("Event "))
    assert not driver.find_elements(By.CSS_SELECTOR, "button[name=delivery]")
    delivery = driver.find_element(By.CSS_SELECTOR, "article.delivery").get_attribute("id")
    assert delivery is not None
    # even a hand-made POST with a valid CSRF token is refused for a viewer
    status = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const csrf = document.querySelector("input[name=csrf]").value;
        const body = new URLSearchParams({csrf: csrf, delivery: arguments[0], confirmed: "yes"});
        fetch("/deliveries/replay", {method: "POST", body: body}).then(r => done(r.status));
        """,
        delivery.removeprefix("delivery-"),
    )
    assert status == 403

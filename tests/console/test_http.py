"""The console in-process (aiohttp test client): off without a token, sign-in and the
session cookie, CSRF, roles, escaping, secrets and the security headers."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from yarl import URL

from gateway.web.console.session import COOKIE
from gateway.web.keys import RUNTIME
from tests.console.conftest import ADMIN, OPERATOR, VIEWER, Console
from tests.support.config import AUTH
from tests.support.payloads import payload
from tests.support.sinks import Sink

Make = Callable[..., Awaitable[Console]]


async def send(console: Console, body: bytes) -> None:
    response = await console.webhook.post("/webhooks/idwise", data=body, headers=AUTH)
    assert response.status == 200, await response.text()


def dead_destination(url: str) -> dict[str, Any]:
    # one attempt and a permanent 4xx: the delivery is dead at once
    return {"type": "http", "url": url, "delivery": {"max_attempts": 1}}


async def test_console_is_off_without_an_admin_token(console: Make) -> None:
    c = await console(admin={"tokens": []})
    response = await c.admin.get("/")
    assert response.status == 404
    assert (await c.admin.get("/metrics")).status == 200  # metrics stay open, as before


async def test_pages_need_a_session_and_sign_in_sets_a_strict_cookie(console: Make) -> None:
    c = await console()
    response = await c.admin.get("/events?journey=x", allow_redirects=False)
    assert response.status == 303
    location = URL(response.headers["Location"])
    assert location.path == "/sign-in" and location.query["next"] == "/events?journey=x"
    refused = await c.admin.post("/sign-in", data={"token": "wrong"}, allow_redirects=False)
    assert refused.status == 401
    response = await c.admin.post(
        "/sign-in", data={"token": VIEWER, "next": "/events"}, allow_redirects=False
    )
    assert response.status == 303 and response.headers["Location"] == "/events"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=28800" in cookie
    assert "Secure" not in cookie  # plain HTTP here; set when the listener speaks TLS
    assert VIEWER not in cookie
    page = await c.admin.get("/")
    assert page.status == 200 and "viewer" in await page.text()


async def test_refused_sign_ins_wait_one_at_a_time(console: Make) -> None:
    import asyncio
    import time

    c = await console()
    started = time.monotonic()
    answers = await asyncio.gather(
        *(c.admin.post("/sign-in", data={"token": f"guess-{i}"}) for i in range(3))
    )
    assert [a.status for a in answers] == [401, 401, 401]
    assert time.monotonic() - started >= 1.4  # 3 x 0.5 s, not 0.5 s in parallel


async def test_sign_in_never_redirects_to_another_host(console: Make) -> None:
    c = await console()
    response = await c.admin.post(
        "/sign-in", data={"token": VIEWER, "next": "//evil.example/x"}, allow_redirects=False
    )
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize("path", ["/", "/events", "/deliveries", "/destinations", "/playground"])
async def test_every_page_has_the_csp_and_no_inline_script(console: Make, path: str) -> None:
    c = await console()
    await c.sign_in(VIEWER)
    response = await c.admin.get(path)
    assert response.status == 200, await response.text()
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    html = await response.text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []  # every script is a file
    assert not re.search(r"\son[a-z]+\s*=", html)  # no inline event handlers
    assert "<style" not in html and "style=" not in html


async def test_a_post_without_the_csrf_token_is_refused(console: Make) -> None:
    c = await console()
    await c.sign_in(OPERATOR)
    response = await c.admin.post("/deliveries/replay", data={"delivery": "1"})
    assert response.status == 403
    assert "CSRF" in await response.text()
    csrf = await c.csrf()
    wrong = await c.admin.post("/deliveries/replay", data={"delivery": "1", "csrf": csrf + "x"})
    assert wrong.status == 403


async def test_a_post_from_another_origin_is_refused(console: Make) -> None:
    c = await console()
    await c.sign_in(OPERATOR)
    csrf = await c.csrf()
    response = await c.admin.post(
        "/playground",
        data={"csrf": csrf, "payload": "{}"},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status == 403


async def test_a_viewer_cannot_replay_and_an_operator_confirms_then_replays(
    console: Make, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    sink.default = 400
    c = await console(
        destinations={"api": dead_destination(sink.url)},
        rules=[{"name": "all", "to": ["api"]}],
    )
    await send(c, payload("Finished Journey", eventId="e-1"))
    await sink.wait_for(1)
    delivery = await _wait_dead(c)
    await c.sign_in(VIEWER)
    csrf = await c.csrf()
    refused = await c.admin.post("/deliveries/replay", data={"csrf": csrf, "delivery": delivery})
    assert refused.status == 403
    assert "operator" in await refused.text()

    await c.sign_in(OPERATOR)
    csrf = await c.csrf()
    sink.default = 200
    confirm = await c.admin.post("/deliveries/replay", data={"csrf": csrf, "delivery": delivery})
    assert confirm.status == 200
    text = await confirm.text()
    assert "Replay deliveries?" in text and 'name="confirmed" value="yes"' in text
    assert len(sink.received) == 1  # nothing happened yet
    caplog.set_level(logging.INFO, "gateway.audit")
    done = await c.admin.post(
        "/deliveries/replay", data={"csrf": csrf, "delivery": delivery, "confirmed": "yes"}
    )
    assert "Re-queued 1 delivery" in await done.text()
    await sink.wait_for(2)
    audits = [r for r in caplog.records if r.name == "gateway.audit"]
    fields = audits[-1].fields  # type: ignore[attr-defined]
    assert fields["action"] == "replay" and fields["count"] == 1
    assert fields["who"].startswith("operator:") and OPERATOR not in json.dumps(fields)


async def _wait_dead(c: Console) -> str:
    import asyncio

    for _ in range(100):
        await c.sign_in(OPERATOR)
        html = await (await c.admin.get("/deliveries?status=dead")).text()
        found = re.search(r'name="delivery" value="(\d+)"', html)
        if found:
            return found.group(1)
        await asyncio.sleep(0.05)
    raise AssertionError("no dead delivery")


async def test_payload_values_are_escaped_and_secrets_never_rendered(
    console: Make, sink: Sink
) -> None:
    secret_url = sink.url + "?key=very-secret-path-77"
    c = await console(
        destinations={"api": {"type": "http", "url": secret_url, "headers": {"Authorization": "Bearer sekret-header-0099"}}},
        rules=[{"name": "all", "to": ["api"]}],
    )  # fmt: skip
    await send(
        c,
        payload(
            "Finished Journey", eventId="x-1", referenceNo="<script>document.title='pwned'</script>"
        ),
    )
    await c.sign_in(VIEWER)
    events = await (await c.admin.get("/events")).text()
    detail = await (await c.admin.get("/events/1")).text()
    destinations = await (await c.admin.get("/destinations")).text()
    for html in (events, detail):
        assert "&lt;script&gt;document.title" in html
        assert "<script>document.title" not in html
    for html in (events, detail, destinations):
        assert "very-secret-path-77" not in html and "sekret-header-0099" not in html


async def test_metrics_accept_any_token_and_reload_needs_an_operator(console: Make) -> None:
    c = await console()
    assert (await c.admin.get("/metrics")).status == 401
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    assert (await c.admin.get("/metrics", headers=viewer)).status == 200
    assert (await c.admin.post("/-/reload", headers=viewer)).status == 403
    assert (await c.admin.post("/-/reload", headers=operator)).status == 200


async def test_events_pages_by_cursor_and_filters(console: Make) -> None:
    c = await console()
    for i in range(60):
        await send(
            c,
            payload(
                "Finished Journey", eventId=f"p-{i}", journeyId=f"j-{i % 3}", referenceNo=f"REF-{i}"
            ),
        )
    await c.sign_in(VIEWER)
    first = await (await c.admin.get("/events")).text()
    assert first.count('<tr class="event"') == 50
    older = re.search(r'rel="next" href="([^"]+)"', first)
    assert older is not None
    second = await (await c.admin.get(older.group(1).replace("&amp;", "&"))).text()
    assert second.count('<tr class="event"') == 10
    journey = await (await c.admin.get("/events?journey=j-1")).text()
    assert journey.count('<tr class="event"') == 20
    reference = await (await c.admin.get("/events?reference=REF-7")).text()
    assert reference.count('<tr class="event"') == 1
    text = await (
        await c.admin.get("/events?q=ref-4")
    ).text()  # case-insensitive: REF-4, REF-40..49
    assert text.count('<tr class="event"') == 11
    bad = await (await c.admin.get("/events?since=yesterday-ish")).text()
    assert "neither a duration" in bad


async def test_session_ends_when_its_token_is_removed_by_a_reload(console: Make) -> None:
    c = await console()
    await c.sign_in(VIEWER)
    assert (await c.admin.get("/", allow_redirects=False)).status == 200
    # the live config decides: drop the viewer token and reload through the runtime
    from gateway.web.keys import RUNTIME

    runtime = c.admin.app[RUNTIME]
    path = runtime.current.file
    text = path.read_text().replace(VIEWER, "another-viewer-token-1")
    path.write_text(text)
    assert (await runtime.reload("test")).ok
    assert (await c.admin.get("/", allow_redirects=False)).status == 303


SESSION_KEY = "console-session-key-" + "5f1c9e2b7d04" * 4


def session_cookie(c: Console) -> str:
    (cookie,) = [m.value for m in c.admin.session.cookie_jar if m.key == COOKIE]
    return cookie


async def test_a_shared_session_key_makes_a_session_good_on_every_replica(
    console: Make,
) -> None:
    """Behind one address, a browser's next request may reach another replica: with
    admin.session_key each accepts the session another issued; without, each its own."""
    shared = {**ADMIN, "session_key": SESSION_KEY}
    first, second, alone = await console(admin=shared), await console(admin=shared), await console()
    await first.sign_in(OPERATOR)
    cookie = session_cookie(first)
    page = await second.admin.get("/", cookies={COOKIE: cookie}, allow_redirects=False)
    assert page.status == 200, await page.text()
    refused = await alone.admin.get("/", cookies={COOKIE: cookie}, allow_redirects=False)
    assert refused.status == 303  # to the sign-in page
    # and the CSRF token of that session is good on the other replica too
    html = await page.text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    assert csrf is not None
    sent = await second.admin.post(
        "/playground",
        data={"csrf": csrf.group(1), "payload": payload("Finished Journey").decode()},
        cookies={COOKIE: cookie},
        headers={"Origin": str(second.admin.make_url("/").origin())},
    )
    assert sent.status == 200, await sent.text()


async def test_a_reload_that_changes_the_session_key_ends_every_session(console: Make) -> None:
    c = await console(admin={**ADMIN, "session_key": SESSION_KEY})
    await c.sign_in(OPERATOR)
    assert (await c.admin.get("/", allow_redirects=False)).status == 200
    runtime = c.admin.app[RUNTIME]
    path = runtime.current.file
    path.write_text(path.read_text().replace(SESSION_KEY, SESSION_KEY[::-1]))
    assert (await runtime.reload("test")).ok
    assert (await c.admin.get("/", allow_redirects=False)).status == 303


async def test_reroute_confirms_the_new_deliveries_then_queues_them(
    console: Make, sink: Sink
) -> None:
    c = await console(
        destinations={"api": {"type": "http", "url": sink.url}},
        rules=[{"name": "refer-only", "when": "body.systemDecision == 'Refer'", "to": ["api"]}],
    )
    await send(c, payload("Finished Journey", eventId="r-1", systemDecision="Complete"))
    await c.sign_in(OPERATOR)
    csrf = await c.csrf()
    nothing = await c.admin.post("/reroute", data={"csrf": csrf, "event": "1"})
    assert "queue 0 new delivery" in await nothing.text()
    # a rule added since: the stored event is re-evaluated against the rules in force
    from gateway.web.keys import RUNTIME

    runtime = c.admin.app[RUNTIME]
    path = runtime.current.file
    path.write_text(path.read_text().replace("body.systemDecision == 'Refer'", "body.eventId"))
    assert (await runtime.reload("test")).ok
    confirm = await c.admin.post("/reroute", data={"csrf": csrf, "event": "1"})
    text = await confirm.text()
    assert "queue 1 new delivery" in text and "<td>api</td>" in text
    assert sink.received == []
    done = await c.admin.post("/reroute", data={"csrf": csrf, "event": "1", "confirmed": "yes"})
    assert "1 new delivery(ies) queued" in await done.text()
    await sink.wait_for(1)
    again = await c.admin.post("/reroute", data={"csrf": csrf, "event": "1"})
    assert "queue 0 new delivery" in await again.text()  # never a second copy


async def test_replay_all_dead_matching_a_filter(console: Make, sink: Sink) -> None:
    sink.default = 400
    c = await console(
        destinations={"api": dead_destination(sink.url)},
        rules=[{"name": "all", "to": ["api"]}],
    )
    for i in range(3):
        await send(c, payload("Finished Journey", eventId=f"f-{i}"))
    await sink.wait_for(3)
    await _wait_dead(c)
    await c.sign_in(OPERATOR)
    csrf = await c.csrf()
    import asyncio

    for _ in range(100):
        listing = await (await c.admin.get("/deliveries?status=dead&destination=api")).text()
        if "<strong>3</strong> dead" in listing:
            break
        await asyncio.sleep(0.05)
    form = {"csrf": csrf, "scope": "filter", "destination": "api", "since": ""}
    confirm = await (await c.admin.post("/deliveries/replay", data=form)).text()
    assert "Re-queue all 3 dead delivery(ies) to api" in confirm
    sink.default = 200
    done = await c.admin.post("/deliveries/replay", data={**form, "confirmed": "yes"})
    assert "Re-queued 3 delivery" in await done.text()
    await sink.wait_for(6)


async def test_playground_explains_without_sending(console: Make, sink: Sink) -> None:
    c = await console(
        destinations={"api": {"type": "http", "url": sink.url}},
        rules=[{"name": "refer", "when": "body.systemDecision == 'Refer'", "to": ["api"]}],
    )
    await c.sign_in(VIEWER)  # a viewer may explain: nothing is sent
    csrf = await c.csrf()
    body = payload("Finished Journey", systemDecision="Refer").decode()
    html = await (await c.admin.post("/playground", data={"csrf": csrf, "payload": body})).text()
    assert "Destinations chosen:</strong> api" in html and "when is true" in html
    bad = await (await c.admin.post("/playground", data={"csrf": csrf, "payload": "{"})).text()
    assert "payload rejected" in bad
    assert sink.received == []


async def test_a_viewer_cannot_send_a_test_event(console: Make, sink: Sink) -> None:
    c = await console(destinations={"api": {"type": "http", "url": sink.url}}, rules=[])
    await c.sign_in(VIEWER)
    csrf = await c.csrf()
    refused = await c.admin.post("/destinations/api/test", data={"csrf": csrf})
    assert refused.status == 403
    await c.sign_in(OPERATOR)
    csrf = await c.csrf()
    sent = await c.admin.post(
        "/destinations/api/test", data={"csrf": csrf, "event": "AML Monitor Update"}
    )
    assert "Delivered in" in await sent.text()
    [received] = sink.received
    assert received.json()["event"] == "AML Monitor Update"


async def test_retry_all_pending_now_leaves_delivered_ones_alone(console: Make, sink: Sink) -> None:
    sink.default = 503
    slow = {"max_attempts": 5, "backoff": {"initial": "1h", "max": "1h", "jitter": 0}}
    c = await console(
        destinations={"api": {"type": "http", "url": sink.url, "delivery": slow}},
        rules=[{"name": "all", "to": ["api"]}],
    )
    for i in range(2):
        await send(c, payload("Finished Journey", eventId=f"w-{i}", journeyId=f"jw-{i}"))
    await sink.wait_for(2)
    await c.sign_in(OPERATOR)
    csrf = await c.csrf()
    import asyncio

    form = {"csrf": csrf, "scope": "filter", "status": "pending", "destination": "api"}
    for _ in range(100):  # until both failed attempts are recorded
        confirm = await (await c.admin.post("/deliveries/replay", data=form)).text()
        if "Make all 2 pending" in confirm:
            break
        await asyncio.sleep(0.05)
    assert "Make all 2 pending delivery(ies) to api due now" in confirm
    sink.default = 200
    done = await c.admin.post("/deliveries/replay", data={**form, "confirmed": "yes"})
    assert "Re-queued 2 delivery" in await done.text()
    await sink.wait_for(4)  # an hour early


async def test_every_page_and_a_replay_on_postgresql(
    console: Make, sink: Sink, postgres_dsn: str
) -> None:
    sink.default = 400
    c = await console(
        storage={"backend": "postgres", "dsn": postgres_dsn, "pool": {"min": 1, "max": 4}},
        destinations={"api": dead_destination(sink.url)},
        rules=[{"name": "all", "to": ["api"]}],
    )
    await send(c, payload("Finished Journey", eventId="pg-1", journeyId="pg-journey"))
    await send(c, payload("Finished Journey", eventId="pg-1", journeyId="pg-journey"))
    await sink.wait_for(1)
    delivery = await _wait_dead(c)
    for path in ("/", "/events?journey=pg-journey", "/events/1", "/deliveries", "/destinations"):
        response = await c.admin.get(path)
        assert response.status == 200, (path, await response.text())
    overview = await (await c.admin.get("/")).text()
    assert re.search(r"Duplicate</th><td class=\"num\">1<", overview), "duplicate counted"
    csrf = await c.csrf()
    sink.default = 200
    done = await c.admin.post(
        "/deliveries/replay", data={"csrf": csrf, "delivery": delivery, "confirmed": "yes"}
    )
    assert "Re-queued 1 delivery" in await done.text()
    await sink.wait_for(2)

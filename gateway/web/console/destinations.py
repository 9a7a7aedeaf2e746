"""The destinations page, and a test event sent for real through one destination. Does I/O
(the store; the destination itself for a test).

A test event is a sample payload with a fresh eventId (`console-test-...`, so a receiver's
idempotency does not swallow it). It goes straight to the destination and is not stored:
it is a check of the wiring, not part of any journey's history. The audit log keeps it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from aiohttp import web

from gateway import idwise
from gateway.destinations.base import SendContext
from gateway.errors import DeliveryError, RetryableDeliveryError
from gateway.events import Event, parse_event
from gateway.web.console.audit import audit
from gateway.web.console.render import page
from gateway.web.console.status import destination_rows
from gateway.web.keys import HTTP_CLIENT, METRICS, RUNTIME, STORE, gateway_app

EXTRA_TIMEOUT = 5.0  # beyond the destination's own timeout, for the whole test


async def destinations_page(request: web.Request) -> web.Response:
    app = gateway_app(request)
    config = request.app[RUNTIME].current
    stats = await app[STORE].delivery_stats()
    return page(
        request,
        "destinations.html",
        {
            "destinations": destination_rows(config, stats, app[METRICS].health),
            "event_types": idwise.EVENT_TYPES,
            "default_type": "Finished Journey",
        },
    )


def test_event(event_type: str) -> Event:
    document = idwise.sample(event_type)
    document["body"]["eventId"] = f"console-test-{uuid.uuid4()}"
    return parse_event(json.dumps(document).encode())


async def send_test_event(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    config = request.app[RUNTIME].current
    destination = config.destinations.get(name)
    if destination is None:
        raise web.HTTPNotFound(text=f"No destination {name} in the config in force.")
    form = await request.post()
    event_type = idwise.find_event_type(str(form.get("event", ""))) or "Finished Journey"
    event = test_event(event_type)
    context = SendContext(client=gateway_app(request)[HTTP_CLIENT])
    started = time.monotonic()
    result: dict[str, object]
    try:
        async with asyncio.timeout(destination.policy.timeout + EXTRA_TIMEOUT):
            sent = await destination.send(event, context)
        result = {"ok": True, "status": sent.status, "detail": sent.detail, "output": sent.output}
    except DeliveryError as exc:
        result = {
            "ok": False,
            "retryable": isinstance(exc, RetryableDeliveryError),
            "reason": exc.reason,
            "detail": exc.detail or str(exc),
            "status": exc.status,
            "output": exc.output,
        }
    except TimeoutError:
        result = {"ok": False, "retryable": True, "reason": "timeout", "detail": "no answer"}
    result["duration"] = time.monotonic() - started
    audit(
        request, "test event", 1, destination=name, event=event_type,
        outcome="delivered" if result["ok"] else f"failed ({result['reason']})",
    )  # fmt: skip
    redact = config.redactor.redact
    shown = {
        key: redact(str(value)) if isinstance(value, str) else value
        for key, value in result.items()
    }
    return page(
        request,
        "test_result.html",
        {"name": name, "type": destination.type, "event": event, "event_type": event_type,
         "result": shown, "preview": destination.preview(event)},
    )  # fmt: skip

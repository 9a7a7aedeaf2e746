"""The events list (filters, keyset pagination) and one event in detail: payload, headers,
the rules explained against the config in force, and every delivery's attempts. Does I/O
(the store).

A text search reads payloads, which no index holds: each page examines at most
TEXT_WINDOW events below its cursor (other unindexed filters: SCAN_WINDOW) and says how far
it looked, so a search over millions of events costs a bounded time per page.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import idwise
from gateway.errors import PayloadError, StoreError
from gateway.events import parse_event
from gateway.explain import explain_event
from gateway.store import EventFilter
from gateway.web.console import forms
from gateway.web.console.render import page
from gateway.web.keys import RUNTIME, STORE, gateway_app

PAGE_SIZE = 50
TEXT_WINDOW = 20_000
SCAN_WINDOW = 100_000
OUTCOMES = ("pending", "delivered", "dead", "unrouted", "duplicate")


def read_filter(query: Any) -> EventFilter:
    outcome = forms.text(query, "outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise forms.FormError(f"outcome: one of {', '.join(OUTCOMES)}")
    return EventFilter(
        event_type=forms.event_type(query),
        journey=forms.text(query, "journey"),
        reference=forms.text(query, "reference"),
        outcome=outcome,
        since=forms.moment(query.get("since")),
        until=forms.moment(query.get("until")),
        text=forms.text(query, "q"),
    )


async def events_list(request: web.Request) -> web.Response:
    store = gateway_app(request)[STORE]
    error = None
    result = None
    try:
        query = read_filter(request.query)
        before = forms.integer(request.query, "before")
        window = TEXT_WINDOW if query.text else SCAN_WINDOW
        result = await store.page_events(query, before=before, limit=PAGE_SIZE, window=window)
    except forms.FormError as exc:
        error = str(exc)
    except StoreError as exc:
        error = f"store error: {exc.reason}"
    kept = {k: v for k, v in request.query.items() if k != "before" and v}
    return page(
        request,
        "events.html",
        {
            "query": request.query,
            "kept": kept,
            "page": result,
            "error": error,
            "event_types": idwise.EVENT_TYPES,
            "outcomes": OUTCOMES,
            "text_window": TEXT_WINDOW,
        },
    )


async def event_detail(request: web.Request) -> web.Response:
    store = gateway_app(request)[STORE]
    key = request.match_info["key"]
    row = await store.get_event(key, with_raw=True)
    if row is None:
        raise web.HTTPNotFound(text=f"No stored event {key}.")
    raw: bytes = row.pop("raw")
    explanation = None
    problem = None
    try:
        explanation = explain_event(request.app[RUNTIME].current, parse_event(raw))
    except PayloadError as exc:  # stored before a stricter parser: show it anyway
        problem = f"the stored payload no longer parses ({exc.reason}): {exc}"
    deliveries = []
    for delivery in row["deliveries"]:
        full = await store.get_delivery(delivery["id"])
        deliveries.append(full or delivery)
    return page(
        request,
        "event.html",
        {"event": row, "explanation": explanation, "problem": problem, "deliveries": deliveries},
    )

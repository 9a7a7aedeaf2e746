"""Dead letters and pending deliveries per destination, and the actions on them: replay one,
a selection or every dead one matching the filter; re-route events through the rules in
force. Does I/O (the store, the audit log).

Every action is two POSTs: the first answers a confirmation page that says what will happen
and to how many deliveries, the second (with `confirmed`) does it. Nothing changes on a GET.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.delivery.reroute import plan_reroute
from gateway.store import Store
from gateway.web.console import forms
from gateway.web.console.audit import audit
from gateway.web.console.render import page
from gateway.web.keys import RUNTIME, STORE, gateway_app

PAGE_SIZE = 50
STATUSES = ("dead", "pending")
MAX_SELECTION = 500
#: events one filtered re-route may re-evaluate (each is parsed and matched in memory)
MAX_REROUTE_EVENTS = 10_000


async def deliveries_list(request: web.Request) -> web.Response:
    store = gateway_app(request)[STORE]
    query = request.query
    status = query.get("status") or "dead"
    if status not in STATUSES:
        raise web.HTTPBadRequest(text=f"status: one of {', '.join(STATUSES)}")
    error = None
    rows: list[dict[str, Any]] = []
    total = 0
    filters: dict[str, Any] = {}
    try:
        filters = {
            "destination": forms.text(query, "destination"),
            "since": forms.moment(query.get("since")),
        }
        before = forms.integer(query, "before")
        rows = await store.list_deliveries(
            status=status, before=before, limit=PAGE_SIZE + 1, **filters
        )
        total = await store.count_deliveries(status=status, **filters)
    except forms.FormError as exc:
        error = str(exc)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    config = request.app[RUNTIME].current
    stats = {row["destination"]: row for row in await store.delivery_stats()}
    return page(
        request,
        "deliveries.html",
        {
            "status": status,
            "query": query,
            "kept": {k: v for k, v in query.items() if k != "before" and v},
            "rows": rows,
            "total": total,
            "next_before": rows[-1]["id"] if more else None,
            "error": error,
            "destinations": sorted(set(config.destinations) | set(stats)),
        },
    )


# ---- replay --------------------------------------------------------------------------------
async def replay(request: web.Request) -> web.Response:
    form = await request.post()
    fields = {key: str(value) for key, value in form.items() if key != "ids"}
    store = gateway_app(request)[STORE]
    ids = _ids(form.getall("ids", []))
    one = forms.integer(fields, "delivery")
    scope = "one" if one is not None else fields.get("scope", "")
    filters: dict[str, Any] = {}
    if scope == "one":
        assert one is not None
        ids = [one]
    elif scope == "filter":
        filters = {
            "destination": forms.text(fields, "destination"),
            "since": forms.moment(fields.get("since")),
        }
        status = fields.get("status") or "dead"
        if status not in STATUSES:
            raise web.HTTPBadRequest(text=f"status: one of {', '.join(STATUSES)}")
    elif scope != "selection":
        raise web.HTTPBadRequest(text="Say what to replay: one delivery, a selection or a filter.")
    if scope != "filter" and not ids:
        raise web.HTTPBadRequest(text="Nothing selected: tick the deliveries to replay.")
    if scope == "filter":
        count = await store.count_deliveries(status=status, **filters)
        sample = await store.list_deliveries(status=status, limit=20, **filters)
    else:
        sample = [row for row in [await store.get_delivery(i) for i in ids] if row]
        count = len(sample)
    if fields.get("confirmed") != "yes":
        return page(
            request,
            "confirm.html",
            {
                "action": "/deliveries/replay",
                "title": "Replay deliveries",
                "what": _replay_description(
                    scope, count, filters, sample, fields.get("status") or "dead"
                ),
                "count": count,
                "sample": sample,
                "fields": fields,
                "ids": ids,
                "back": "/deliveries",
            },
        )
    if scope == "filter":
        done = await store.replay(dead=status == "dead", pending=status == "pending", **filters)
    else:
        done = 0
        for delivery_id in [row["id"] for row in sample]:
            done += await store.replay(delivery_id=delivery_id)
    audit(request, "replay", done, scope=scope, ids=ids[:50] or None, **_loggable(filters))
    return page(
        request,
        "done.html",
        {
            "title": "Replayed",
            "message": f"Re-queued {done} delivery(ies); the gateway sends them within a second.",
            "links": [
                ("/deliveries?status=pending", "Pending deliveries"),
                ("/deliveries", "Dead letters"),
            ],
        },
    )


def _replay_description(
    scope: str, count: int, filters: dict[str, Any], sample: list[dict[str, Any]], status: str
) -> str:
    where = f" to {filters['destination']}" if filters.get("destination") else ""
    since = " queued in the chosen period" if filters.get("since") else ""
    if scope == "filter" and status == "pending":
        return (
            f"Make all {count} pending delivery(ies){where}{since} due now: their backoff wait "
            "ends and the running gateway tries them within a second. Their attempt budget "
            "is unchanged."
        )
    if scope == "filter":
        return (
            f"Re-queue all {count} dead delivery(ies){where}{since}. Each gets a fresh budget "
            "of attempts and maximum age, and is sent again by the running gateway."
        )
    states = sorted({row["status"] for row in sample})
    note = (
        " Delivered ones will be sent once more (receivers should use the Idempotency-Key)."
        if "delivered" in states
        else ""
    )
    return (
        f"Re-queue {count} delivery(ies) ({', '.join(states) or 'none found'}): dead ones get "
        f"a fresh budget, pending ones are made due now.{note}"
    )


# ---- re-route ------------------------------------------------------------------------------
async def reroute(request: web.Request) -> web.Response:
    form = await request.post()
    fields = {key: str(value) for key, value in form.items() if key != "ids"}
    store = gateway_app(request)[STORE]
    config = request.app[RUNTIME].current
    event_key = forms.text(fields, "event")
    since = forms.moment(fields.get("since"))
    ids = _ids(form.getall("ids", []))
    if fields.get("scope") == "selection":  # the list's button: its period filter is not a scope
        since = None
        if not ids:
            raise web.HTTPBadRequest(
                text="Nothing selected: tick the deliveries whose events to re-route."
            )
    if event_key is None and since is None and not ids:
        raise web.HTTPBadRequest(text="Say which events to re-route: one, a selection or a period.")
    events = await _events(store, event_key, since, ids)
    if len(events) > MAX_REROUTE_EVENTS:
        raise web.HTTPBadRequest(
            text=f"{len(events)} events: re-route at most {MAX_REROUTE_EVENTS} at a time (narrow the period)."
        )
    additions = plan_reroute(config, events, await store.existing_routes([r for r, _ in events]))
    per_destination: dict[str, int] = {}
    for _, destination, _, _ in additions:
        per_destination[destination] = per_destination.get(destination, 0) + 1
    if fields.get("confirmed") != "yes":
        return page(
            request,
            "confirm.html",
            {
                "action": "/reroute",
                "title": "Re-route through the current rules",
                "what": (
                    f"Re-evaluate {len(events)} stored event(s) against the rules in force and "
                    f"queue {len(additions)} new delivery(ies) to destinations they have not "
                    "had yet. Existing deliveries are left as they are."
                ),
                "count": len(additions),
                "per_destination": per_destination,
                "sample": [],
                "fields": fields,
                "ids": ids,
                "back": f"/events/{event_key}" if event_key else "/deliveries",
            },
        )
    added = await store.add_routes(additions)
    audit(
        request, "reroute", added, events=len(events), event=event_key, selection=len(ids) or None
    )
    return page(
        request,
        "done.html",
        {
            "title": "Re-routed",
            "message": f"Re-evaluated {len(events)} event(s): {added} new delivery(ies) queued.",
            "links": [("/deliveries?status=pending", "Pending deliveries"), ("/events", "Events")],
        },
    )


async def _events(
    store: Store, event_key: str | None, since: float | None, delivery_ids: list[int]
) -> list[tuple[int, bytes]]:
    if event_key is not None:
        row = await store.get_event(event_key, with_raw=True)
        return [(row["id"], row["raw"])] if row else []
    if not delivery_ids and since is not None:
        return await store.events_for_reroute(since=since)
    rows: dict[int, bytes] = {}
    for delivery_id in delivery_ids:
        delivery = await store.get_delivery(delivery_id)
        if delivery and delivery["event_row"] not in rows:
            event = await store.get_event(str(delivery["event_row"]), with_raw=True)
            if event:
                rows[event["id"]] = event["raw"]
    return list(rows.items())


def _ids(values: list[Any]) -> list[int]:
    ids = []
    for value in values[:MAX_SELECTION]:
        text = str(value)
        if text.isascii() and text.isdigit():
            ids.append(int(text))
    return ids


def _loggable(filters: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in filters.items() if value is not None}

"""The overview page: webhooks over the last hour and day, each destination's backlog and
last error, the config in force and the last reload, store health. Does I/O (the store).

It refreshes itself (static/console.js fetches the page again and swaps the live part).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from gateway.errors import StoreError
from gateway.web.console.render import page
from gateway.web.console.status import destination_rows
from gateway.web.keys import LIFECYCLE, METRICS, RUNTIME, STORE, gateway_app

REFRESH_SECONDS = 5


async def overview(request: web.Request) -> web.Response:
    app = gateway_app(request)
    runtime = request.app[RUNTIME]
    metrics = app[METRICS]
    store = app.get(STORE)
    now = time.time()
    counts: dict[str, dict[str, int]] = {}
    stats: list[dict[str, Any]] = []
    store_error = None
    writable = False
    if store is not None:
        try:
            counts = {
                "hour": await store.webhook_counts(now - 3600),
                "day": await store.webhook_counts(now - 86400),
            }
            stats = await store.delivery_stats()
        except StoreError as exc:
            store_error = exc.reason
        writable = await app[LIFECYCLE].store_writable(store)
    refused = metrics.refused_recent
    config = runtime.current
    return page(
        request,
        "overview.html",
        {
            "refresh": REFRESH_SECONDS,
            "counts": counts,
            "refused": {
                "hour": refused.within(3600),
                "day": refused.within(86400),
                "since": refused.started,
            },
            "destinations": destination_rows(config, stats, metrics.health),
            "config": config,
            "loaded_at": runtime.loaded_at,
            "last_reload": runtime.last_reload,
            "store": {
                "backend": type(store).__name__ if store is not None else None,
                "writable": writable,
                "error": store_error,
                "commits": store.writer_stats[0] if store is not None else 0,
                "draining": app[LIFECYCLE].draining,
            },
        },
    )

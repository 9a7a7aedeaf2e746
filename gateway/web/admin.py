"""The admin listener's own endpoints: Prometheus metrics and the reload trigger. Does I/O
(store statistics for the pending gauges; the reload reads files)."""

from __future__ import annotations

import json
import time

from aiohttp import web

from gateway.errors import StoreError
from gateway.metrics import CONTENT_TYPE
from gateway.web.keys import LIFECYCLE, METRICS, RUNTIME, STORE, gateway_app


async def metrics_endpoint(request: web.Request) -> web.Response:
    app = gateway_app(request)
    metrics = app[METRICS]
    store = app.get(STORE)
    if store is not None:
        try:
            rows = await store.pending_stats()
            now = time.time()
            oldest = min((r["oldest"] for r in rows), default=None)
            metrics.set_pending(
                {r["destination"]: r["pending"] for r in rows}, now - oldest if oldest else 0.0
            )
        except StoreError:
            pass
    writable = await app[LIFECYCLE].store_writable(store)
    metrics.store_writable.set(1 if writable else 0)
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def reload_endpoint(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    result = await runtime.reload("http")
    body = {
        "status": "ok" if result.ok else "error",
        "config_hash": result.digest,
        "changed": result.changed,
        "restart_needed": list(result.restart_needed),
    }
    if not result.ok:
        body["errors"] = [runtime.current.redactor.redact(error) for error in result.errors]
    return web.json_response(
        body, status=200 if result.ok else 400, dumps=lambda o: json.dumps(o, ensure_ascii=False)
    )

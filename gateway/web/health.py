"""Liveness and readiness, served on both listeners. Does I/O (a cached store heartbeat)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.web.keys import LIFECYCLE, RUNTIME, STORE, gateway_app


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = gateway_app(request)
    lifecycle = app[LIFECYCLE]
    checks: dict[str, Any] = {
        "config": "ok" if app[RUNTIME].current else "missing",
        "store": await lifecycle.store_status(app.get(STORE)),
        "draining": lifecycle.draining,
    }
    ready = checks["config"] == "ok" and checks["store"] == "ok" and not lifecycle.draining
    return web.json_response(
        {"status": "ready" if ready else "not_ready", **checks}, status=200 if ready else 503
    )

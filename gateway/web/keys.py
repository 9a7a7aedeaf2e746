"""Every typed key stored on the aiohttp apps, in one place.

Set when the app is created: RUNTIME, METRICS, LIFECYCLE (shared by both listeners).
Set by the webhook app's cleanup contexts while it runs: STORE, ENGINE. The admin app
reaches those through GATEWAY, the webhook app it serves beside.
"""

from __future__ import annotations

from aiohttp import web

from gateway.delivery import DeliveryEngine
from gateway.metrics import Metrics
from gateway.runtime import Runtime
from gateway.store import Store
from gateway.web.lifecycle import Lifecycle

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
LIFECYCLE: web.AppKey[Lifecycle] = web.AppKey("lifecycle")
STORE: web.AppKey[Store] = web.AppKey("store")
ENGINE: web.AppKey[DeliveryEngine] = web.AppKey("engine")
GATEWAY: web.AppKey[web.Application] = web.AppKey("gateway")


def gateway_app(request: web.Request) -> web.Application:
    """The webhook app, which holds the store and the engine, from either listener."""
    return request.app.get(GATEWAY, request.app)

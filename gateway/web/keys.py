"""Every typed key stored on the aiohttp apps, in one place.

Set when the app is created: RUNTIME, METRICS, LIFECYCLE (shared by both listeners).
Set by the webhook app's cleanup contexts while it runs: STORE, ENGINE, HTTP_CLIENT. The admin
app reaches those through GATEWAY, the webhook app it serves beside; it holds CONSOLE and
SIGN_IN_GATE.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.delivery import DeliveryEngine
from gateway.destinations.client import HttpClient
from gateway.metrics import Metrics
from gateway.runtime import Runtime
from gateway.store import Store
from gateway.web.console.session import SessionSigner
from gateway.web.lifecycle import Lifecycle

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
LIFECYCLE: web.AppKey[Lifecycle] = web.AppKey("lifecycle")
STORE: web.AppKey[Store] = web.AppKey("store")
ENGINE: web.AppKey[DeliveryEngine] = web.AppKey("engine")
GATEWAY: web.AppKey[web.Application] = web.AppKey("gateway")
#: the engine's default HTTP client, for the console's test events
HTTP_CLIENT: web.AppKey[HttpClient] = web.AppKey("http_client")
#: signs the console's session cookies (a key of this process only)
CONSOLE: web.AppKey[SessionSigner] = web.AppKey("console")
#: refused console sign-ins wait their delay one at a time
SIGN_IN_GATE: web.AppKey[asyncio.Lock] = web.AppKey("sign_in_gate")


def gateway_app(request: web.Request) -> web.Application:
    """The webhook app, which holds the store and the engine, from either listener."""
    return request.app.get(GATEWAY, request.app)

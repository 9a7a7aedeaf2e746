"""The webhook listener's direct route: a plain POST to the webhook path goes straight to
the webhook pipeline; every other request takes the application's own way (router,
middlewares, `Expect: 100-continue`, 404 and 405 answers). Request plumbing; no I/O.

Most webhook POSTs never reach aiohttp at all (gateway.web.fast_path serves them off the
socket); this route serves those the fast path hands over (chunked bodies, a header sent
twice, HTTP/1.0, a connection that asked for something else first).

Why: aiohttp's `Application._handle` (router lookup, match info, the cached middleware
chain, the response-prepare signals) costs about a sixth of what bare aiohttp spends on a
request (bench/RESULTS.md), and a webhook needs none of it: the pipeline writes its own log
line and never raises (the same JSON 500 as `json_errors` guards it anyway).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from aiohttp import hdrs, web

from gateway.web.middleware import json_errors
from gateway.web.webhook import handle_webhook

RequestHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def direct_webhook_route(app: web.Application, path: str, routed: RequestHandler) -> RequestHandler:
    """A request handler for aiohttp's `Server`: POSTs to `path` (exactly, no query string,
    no `Expect` header) to the webhook pipeline, the rest to `routed` (the app's own)."""
    webhook = partial(handle_webhook, app)

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        # raw_path is the request target as sent: anything but the plain path (a query
        # string, percent-escapes) is left to the router, which answers it as before
        if (
            request.raw_path == path
            and request.method == hdrs.METH_POST
            and hdrs.EXPECT not in request.headers
        ):
            return await json_errors(request, webhook)  # type: ignore[arg-type]
        return await routed(request)

    return handle


def route_webhooks_directly(runner: web.AppRunner, path: str) -> None:
    """Put the direct route in front of `runner`'s application (after `runner.setup()`);
    connections opened from then on use it."""
    server = runner.server
    assert server is not None, "runner not set up"
    server.request_handler = direct_webhook_route(runner.app, path, server.request_handler)

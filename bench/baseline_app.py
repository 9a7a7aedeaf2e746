"""Baseline for every HTTP figure: a minimal aiohttp app on the same event loop (uvloop)
that reads the body, parses the JSON and answers 200. No auth, no store, no routing."""

import json
import sys
from collections.abc import Callable

from aiohttp import web


async def receive(request: web.Request) -> web.Response:
    document = json.loads(await request.read())
    return web.json_response({"status": "accepted", "eventId": document["body"].get("eventId")})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def serve(port: int, routes: Callable[[web.Application], None]) -> None:
    """Run a bench app on uvloop (as the gateway runs), /healthz first, no access log."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    routes(app)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def routes(app: web.Application) -> None:
    app.router.add_post("/webhooks/idwise", receive)


def main() -> None:
    serve(int(sys.argv[1]), routes)


if __name__ == "__main__":
    main()

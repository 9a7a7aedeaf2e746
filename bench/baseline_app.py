"""Baseline for every HTTP figure: a minimal aiohttp app on the same event loop (uvloop)
that reads the body, parses the JSON and answers 200. No auth, no store, no routing."""

import json
import sys

from aiohttp import web


async def receive(request: web.Request) -> web.Response:
    document = json.loads(await request.read())
    return web.json_response({"status": "accepted", "eventId": document["body"].get("eventId")})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    app = web.Application()
    app.router.add_post("/webhooks/idwise", receive)
    app.router.add_route("*", "/hook", receive_any)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


async def receive_any(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="ok")


if __name__ == "__main__":
    main()

"""Delivery sink for bench/fanout.py: answers 200 and records (arrival time, Idempotency-Key,
path) for every request; GET /stats returns the count, POST /dump writes them to a file."""

import json
import sys
import time
from pathlib import Path

from aiohttp import web
from baseline_app import serve

arrivals: list[tuple[float, str, str]] = []


async def receive(request: web.Request) -> web.Response:
    await request.read()
    arrivals.append((time.time(), request.headers.get("Idempotency-Key", ""), request.path))
    return web.Response(text="ok")


async def stats(request: web.Request) -> web.Response:
    return web.json_response({"count": len(arrivals)})


async def dump(request: web.Request) -> web.Response:
    target = (await request.json())["path"]
    Path(target).write_text(json.dumps(arrivals))  # noqa: ASYNC240 - a benchmark tool, after the run
    return web.json_response({"count": len(arrivals)})


def routes(app: web.Application) -> None:
    app.router.add_get("/stats", stats)
    app.router.add_post("/dump", dump)
    app.router.add_route("*", "/{tail:.*}", receive)


def main() -> None:
    serve(int(sys.argv[1]), routes)


if __name__ == "__main__":
    main()

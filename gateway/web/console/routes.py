"""The console's routes on the admin app, its templates and its static files. Every route
is named `console.*`: the guard (guard.py) recognises console requests by that name, and the
admin token middleware leaves them to it."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.web.console import deliveries, destinations, events, overview, playground, signin
from gateway.web.console.guard import console_guard
from gateway.web.console.render import HERE, setup_templates
from gateway.web.console.session import SessionSigner
from gateway.web.keys import CONSOLE, RUNTIME, SIGN_IN_GATE

STATIC = HERE / "static"
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


async def static_file(request: web.Request) -> web.Response:
    # a fixed folder and a plain file name: no path can climb out of it
    name = request.match_info["name"]
    path = STATIC / name
    if "/" in name or name.startswith(".") or path.suffix not in STATIC_TYPES or not path.is_file():
        raise web.HTTPNotFound(text="no such file")
    return web.Response(
        body=path.read_bytes(),
        content_type=STATIC_TYPES[path.suffix],
        headers={"Cache-Control": "max-age=300"},
    )


def add_console(admin: web.Application) -> None:
    runtime = admin[RUNTIME]

    def shared_key() -> str | None:
        key = runtime.current.admin.session_key
        return key.reveal() if key is not None else None

    admin[CONSOLE] = SessionSigner(shared=shared_key)
    admin[SIGN_IN_GATE] = asyncio.Lock()
    admin.middlewares.append(console_guard)
    setup_templates(admin)
    r = admin.router
    r.add_get("/", overview.overview, name="console.overview")
    r.add_get("/sign-in", signin.sign_in_form, name="console.sign_in")
    r.add_post("/sign-in", signin.sign_in, name="console.sign_in_post")
    r.add_post("/sign-out", signin.sign_out, name="console.sign_out")
    r.add_get("/events", events.events_list, name="console.events")
    r.add_get("/events/{key}", events.event_detail, name="console.event")
    r.add_get("/deliveries", deliveries.deliveries_list, name="console.deliveries")
    r.add_post("/deliveries/replay", deliveries.replay, name="console.replay")
    r.add_post("/reroute", deliveries.reroute, name="console.reroute")
    r.add_get("/destinations", destinations.destinations_page, name="console.destinations")
    r.add_post("/destinations/{name}/test", destinations.send_test_event, name="console.test_event")
    r.add_get("/playground", playground.playground, name="console.playground")
    r.add_post("/playground", playground.playground_run, name="console.playground_run")
    r.add_get("/static/{name}", static_file, name="console.static")

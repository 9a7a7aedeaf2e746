"""Signing in with an admin token and out again. Does I/O (the audit log).

The token is typed once into a form and exchanged for a session cookie: HttpOnly (no script
can read it), SameSite=Strict (no other site's page sends it), Secure when the listener
speaks TLS, and expiring with the session.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.web.access import identify
from gateway.web.console.audit import audit
from gateway.web.console.render import SESSION_KEY, page
from gateway.web.console.session import COOKIE, LIFETIME
from gateway.web.keys import CONSOLE, RUNTIME, SIGN_IN_GATE

FAILED_SIGN_IN_DELAY = 0.5  # slows guessing; a person does not notice


def _next(target: str | None) -> str:
    # only a path on this listener: never an open redirect to another host
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return "/"


async def sign_in_form(request: web.Request) -> web.Response:
    return page(request, "sign_in.html", {"next": _next(request.query.get("next")), "error": None})


async def sign_in(request: web.Request) -> web.Response:
    form = await request.post()
    target = _next(str(form.get("next", "")))
    principal = identify(request.app[RUNTIME].current.admin, str(form.get("token", "")).strip())
    if principal is None:
        audit(request, "sign-in refused")
        # one refused sign-in at a time, whoever sends them: at most two guesses a second
        # however many connections a guesser opens
        async with request.app[SIGN_IN_GATE]:
            await asyncio.sleep(FAILED_SIGN_IN_DELAY)
        return page(
            request, "sign_in.html", {"next": target, "error": "That token is not valid here."},
            status=401,
        )  # fmt: skip
    cookie, session = request.app[CONSOLE].issue(principal)
    request[SESSION_KEY] = session
    audit(request, "sign-in")
    response = web.Response(status=303, headers={"Location": target})
    response.set_cookie(
        COOKIE, cookie, max_age=int(LIFETIME), path="/", httponly=True, samesite="Strict",
        secure=request.secure,
    )  # fmt: skip
    return response


async def sign_out(request: web.Request) -> web.Response:
    audit(request, "sign-out")
    response = web.Response(status=303, headers={"Location": "/sign-in"})
    response.del_cookie(COOKIE, path="/")
    return response

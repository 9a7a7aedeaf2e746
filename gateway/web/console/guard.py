"""The console's gate: off without a token, a valid session for every page, the CSRF token
and a same-origin check for every POST, the operator role for actions, and the security
headers on every answer. Pure request plumbing (no store).

Errors on console pages are HTML pages, not the admin API's JSON.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from gateway.web.access import console_enabled, still_valid
from gateway.web.console.render import SESSION_KEY, page
from gateway.web.console.session import COOKIE
from gateway.web.keys import CONSOLE, RUNTIME

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PREFIX = "console."
PUBLIC = frozenset({"console.static", "console.sign_in", "console.sign_in_post"})
#: what a viewer may not do (403)
OPERATOR_ONLY = frozenset({"console.replay", "console.reroute", "console.test_event"})

# no inline script or style anywhere: scripts and styles come from /static only
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # not no-referrer: under it browsers send `Origin: null` with same-origin form posts
    "Referrer-Policy": "same-origin",
}


def console_route(request: web.Request) -> str | None:
    name = request.match_info.route.name
    return name if name and name.startswith(PREFIX) else None


@web.middleware
async def console_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    name = console_route(request)
    if name is None:
        return await handler(request)
    try:
        response = await _guarded(request, handler, name)
    except web.HTTPException as exc:
        if exc.status < 400:
            exc.headers.update(HEADERS)
            raise
        response = page(
            request, "error.html", {"status": exc.status, "message": exc.text or exc.reason},
            status=exc.status,
        )  # fmt: skip
    response.headers.update(HEADERS)
    if name != "console.static":
        response.headers["Cache-Control"] = "no-store"
    return response


async def _guarded(request: web.Request, handler: Handler, name: str) -> web.StreamResponse:
    admin = request.app[RUNTIME].current.admin
    if not console_enabled(admin):
        raise web.HTTPNotFound(text="The console is off: it needs admin.token or admin.tokens.")
    if name in PUBLIC:
        if request.method == "POST":
            _same_origin(request)
        return await handler(request)
    signer = request.app[CONSOLE]
    session = signer.verify(request.cookies.get(COOKIE))
    if session is None or not still_valid(admin, session.principal):
        if request.method == "GET":
            raise web.HTTPSeeOther(f"/sign-in?next={quote(request.path_qs, safe='')}")
        raise web.HTTPUnauthorized(text="Sign in first (the session expired or was revoked).")
    request[SESSION_KEY] = session
    if request.method == "POST":
        _same_origin(request)
        form = await request.post()
        if not signer.csrf_ok(session, str(form.get("csrf", ""))):
            raise web.HTTPForbidden(text="Refused: the form's CSRF token is missing or wrong.")
    if name in OPERATOR_ONLY and not session.principal.may_act:
        raise web.HTTPForbidden(
            text="Your token is a viewer's: replays and test events need an operator token."
        )
    return await handler(request)


def _same_origin(request: web.Request) -> None:
    """A browser names the page a POST comes from; another site's form is refused even
    before its (missing) CSRF token is looked at."""
    origin = request.headers.get("Origin")
    if origin and origin != f"{request.scheme}://{request.host}":
        raise web.HTTPForbidden(text="Refused: the request comes from another site.")

"""Middlewares: every error is a JSON answer, and the admin token guards the admin listener.
Pure request plumbing; no I/O of its own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.runtime import Runtime
from gateway.web.access import credentials, identify
from gateway.web.console.guard import console_route
from gateway.web.responses import error_response

log = logging.getLogger("gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: probes must answer without credentials (Kubernetes sends none)
UNGUARDED = ("/healthz", "/readyz")


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error is a JSON answer; never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.reason.lower().replace(" ", "_")
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}
        return error_response(exc.status, reason, exc.reason, **headers)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error", extra={"fields": {"path": request.rel_url.path}})
        return error_response(500, "internal", "internal error")


def admin_auth(runtime: Runtime) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Bearer token for /metrics and /-/reload, read from the live config on every request
    (a reload rotates it). Any configured token reads; a POST needs an operator token.
    Console pages are left to the console's guard (session cookie, CSRF)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        admin = runtime.current.admin
        if (
            request.rel_url.path in UNGUARDED
            or console_route(request) is not None
            or not credentials(admin)
        ):
            return await handler(request)
        # the scheme is case-insensitive (RFC 9110 11.1); a bare token is refused
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        principal = identify(admin, given.strip()) if scheme.lower() == "bearer" else None
        if principal is None:
            return error_response(
                401, "unauthorized", "admin token required", **{"WWW-Authenticate": "Bearer"}
            )
        if request.method == "POST" and not principal.may_act:
            return error_response(403, "forbidden", "an operator token is required")
        return await handler(request)

    return middleware

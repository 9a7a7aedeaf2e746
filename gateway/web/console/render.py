"""Pages: the Jinja2 environment (templates and filters) and the one helper every handler
renders through. Pure apart from reading the packaged templates.

Autoescaping is on for every template, so payload values (which come from the internet)
always reach the browser as text; JSON shown on a page passes the secret redaction first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from gateway.secret import Redactor
from gateway.web.console.session import Session
from gateway.web.keys import CONSOLE, RUNTIME

HERE = Path(__file__).resolve().parent
SESSION_KEY: web.RequestKey[Session] = web.RequestKey("console_session", Session)

NAV = (  # (route name, path, label)
    ("console.overview", "/", "Overview"),
    ("console.events", "/events", "Events"),
    ("console.deliveries", "/deliveries", "Dead letters & pending"),
    ("console.destinations", "/destinations", "Destinations"),
    ("console.playground", "/playground", "Rules playground"),
)


def setup_templates(app: web.Application) -> None:
    filters: dict[str, Callable[..., str]] = {
        "utc": utc,
        "ago": ago,
        "seconds": seconds,
        "pretty": pretty,
        "masked": masked,
        "filename": filename,
    }
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a typo in a template fails loudly in tests
        filters=filters,
    )


def page(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    session: Session | None = request.get(SESSION_KEY)
    csrf = request.app[CONSOLE].csrf_token(session) if session is not None else ""
    base = {
        "nav": NAV,
        "current": request.match_info.route.name,
        "principal": session.principal if session is not None else None,
        "csrf": csrf,
        "now": time.time(),
        # the live config's redactor: the filters below mask every secret it knows
        "redactor": request.app[RUNTIME].current.redactor,
    }
    return aiohttp_jinja2.render_template(template, request, {**base, **context}, status=status)


# ---- filters ------------------------------------------------------------------------------
def utc(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(value: float | None, now: float | None = None) -> str:
    if value is None:
        return "-"
    return seconds((now or time.time()) - value) + " ago"


def seconds(value: float | None) -> str:
    """A duration for people: 85 ms, 12 s, 4 min, 3 h, 2 d."""
    if value is None:
        return "-"
    value = max(0.0, value)
    if value < 1:
        return f"{value * 1000:.0f} ms"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if value >= size:
            return f"{value / size:.1f} {unit}".replace(".0 ", " ")
    return f"{value:.1f} s".replace(".0 ", " ")


@jinja2.pass_context
def pretty(context: jinja2.runtime.Context, value: Any) -> str:
    """Indented JSON with every registered secret masked inside string values."""
    redactor: Redactor = context["redactor"]
    return json.dumps(json.loads(redactor.redact_json(value)), indent=2, ensure_ascii=False)


def filename(value: str) -> str:
    """A rule's file without its folders: which file, not where the server keeps it."""
    return Path(value).name if value else ""


@jinja2.pass_context
def masked(context: jinja2.runtime.Context, value: Any) -> str:
    redactor: Redactor = context["redactor"]
    return redactor.redact(str(value))

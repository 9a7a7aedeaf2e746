"""The rules playground: a pasted or sample payload explained against the config in force,
with every message it would produce. Pure apart from the request; nothing is sent or stored.
"""

from __future__ import annotations

from aiohttp import web

from gateway import idwise
from gateway.errors import PayloadError
from gateway.events import parse_event
from gateway.explain import explain_event
from gateway.web.console.render import page
from gateway.web.keys import RUNTIME

MAX_PAYLOAD = 256 * 1024


async def playground(request: web.Request) -> web.Response:
    chosen = idwise.find_event_type(request.query.get("sample", "")) or "Finished Journey"
    payload = idwise.sample_bytes(chosen).decode()
    return _page(request, chosen, payload, None, None)


async def playground_run(request: web.Request) -> web.Response:
    form = await request.post()
    chosen = idwise.find_event_type(str(form.get("sample", ""))) or "Finished Journey"
    if form.get("load"):  # "load this sample" replaces the text
        return _page(request, chosen, idwise.sample_bytes(chosen).decode(), None, None)
    payload = str(form.get("payload", ""))
    if len(payload.encode()) > MAX_PAYLOAD:
        return _page(request, chosen, "", None, f"payload larger than {MAX_PAYLOAD} bytes")
    try:
        event = parse_event(payload.encode())
    except PayloadError as exc:
        return _page(request, chosen, payload, None, f"payload rejected ({exc.reason}): {exc}")
    explanation = explain_event(request.app[RUNTIME].current, event)
    return _page(request, chosen, payload, explanation, None)


def _page(
    request: web.Request, chosen: str, payload: str, explanation: object, error: str | None
) -> web.Response:
    return page(
        request,
        "playground.html",
        {
            "event_types": idwise.EVENT_TYPES,
            "chosen": chosen,
            "payload": payload,
            "explanation": explanation,
            "error": error,
        },
    )

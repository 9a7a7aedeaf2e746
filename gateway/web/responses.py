"""The JSON answers every listener gives. Pure (builds responses, sends nothing)."""

from __future__ import annotations

import json

from aiohttp import web


def error_body(reason: str, message: str) -> bytes:
    """The body of every error answer (the fast path writes the same bytes itself)."""
    return json.dumps({"status": "error", "error": reason, "message": message}).encode()


def error_response(status: int, reason: str, message: str, **headers: str) -> web.Response:
    return web.Response(
        body=error_body(reason, message),
        status=status,
        headers=headers or None,
        content_type="application/json",
        charset="utf-8",
    )

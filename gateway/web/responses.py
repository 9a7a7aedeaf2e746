"""The JSON answers every listener gives. Pure (builds responses, sends nothing)."""

from __future__ import annotations

from aiohttp import web


def error_response(status: int, reason: str, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"status": "error", "error": reason, "message": message},
        status=status,
        headers=headers or None,
    )

"""The webhook's answers as bytes: the 200 written to aiohttp's connection in one piece,
and the head of every answer the listener's fast path writes itself. Request plumbing;
writes to the transport.

Why: for an answer that is always the same shape (200, a JSON body of a few dozen bytes),
aiohttp's response path (headers in a multidict, the status line and headers serialized,
the payload writer's buffering and its own end of message) cost about a third of what bare
aiohttp spends on a whole request (bench/RESULTS.md, issue 15, fifth pass). Here the
status line, the same headers aiohttp would send (Content-Type, Content-Length, Date,
Server, and Connection: close when the connection ends) and the body go out in one write.

Only HTTP/1.1 requests get it (an HTTP/1.0 client is answered in its own version by
aiohttp), and only while aiohttp's response keeps the private fields its request handler
reads back (checked once at import: otherwise every answer is an ordinary Response).
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time  # the Date aiohttp sends, cached per second
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11

#: what aiohttp's request handler reads of a response after `prepare` and `write_eof`
_READ_BACK = ("_eof_sent", "_keep_alive", "_body_length", "_payload_writer")


def _fields_present() -> bool:
    probe = web.StreamResponse()
    # and the request handler's wait for a client that reads slower than it sends
    return all(hasattr(probe, name) for name in _READ_BACK) and hasattr(
        web.RequestHandler, "_drain_helper"
    )


AVAILABLE = _fields_present()

_CLOSE = "Connection: close\r\n"
_NONE: Mapping[str, str] = {}
_PHRASES = {status.value: status.phrase for status in HTTPStatus}
JSON = "application/json"
#: what aiohttp's json_response sends, so error answers read the same on both ways
JSON_UTF8 = "application/json; charset=utf-8"


def phrase(status: int) -> str:
    """The reason phrase aiohttp writes for `status` ("" for a status it has none for)."""
    return _PHRASES.get(status, "")


def wire_head(
    length: int,
    keep_alive: bool,
    status: int = 200,
    content_type: str = JSON,
    headers: Mapping[str, str] = _NONE,
) -> bytes:
    """An HTTP/1.1 status line and headers as aiohttp would write them for a body of
    `length` bytes; `headers` are the gateway's own (Retry-After, WWW-Authenticate)."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items()) if headers else ""
    return (
        f"HTTP/1.1 {status} {_PHRASES[status]}\r\n{extra}"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
        f"Date: {rfc822_formatted_time()}\r\nServer: {SERVER_SOFTWARE}\r\n"
        f"{'' if keep_alive else _CLOSE}\r\n"
    ).encode("ascii")


class WireAnswer(web.StreamResponse):
    """A 200 `application/json` answer whose `prepare` writes everything at once; status,
    keep-alive, body length and `prepared` read back as they would for a Response."""

    def __init__(self, body: bytes) -> None:
        super().__init__(status=200)
        self.content_type = "application/json"  # for whoever reads the headers back
        self._wire_body = body

    async def prepare(self, request: web.BaseRequest) -> Any:
        if self._eof_sent:
            return None
        keep_alive = request.keep_alive
        self._keep_alive = keep_alive
        self._eof_sent = True
        self._body_length = len(self._wire_body)
        transport = request.transport
        if transport is None or transport.is_closing():
            # the request handler takes a ConnectionError here for a client that left
            raise ConnectionResetError("the client closed the connection")
        transport.write(wire_head(len(self._wire_body), keep_alive) + self._wire_body)
        protocol = request.protocol
        if protocol.writing_paused:  # a client that sends (pipelines) and does not read
            await protocol._drain_helper()  # as aiohttp's own writer waits
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def json_200(request: web.BaseRequest, body: bytes) -> web.StreamResponse:
    """The webhook's 200: written in one piece where it can be, else an ordinary Response."""
    if AVAILABLE and request.version == HttpVersion11:
        return WireAnswer(body)
    return web.Response(body=body, content_type="application/json")

"""The head of a plain webhook POST, read from the bytes a connection received. Pure.

The webhook listener's fast path (gateway.web.fast_path) serves only requests this module
recognises, and hands the connection to aiohttp for anything else, at the first byte of the
request it does not recognise. So this is not an HTTP parser: it is a strict recogniser of
one shape,

    POST {server.path} HTTP/1.1
    Host: ...                  (required, as aiohttp requires it)
    Content-Length: DIGITS     (the only framing; at most the body limit)
    name: value                (tokens and visible characters, each name once)

and everything outside it (another method, target or version, Transfer-Encoding, Expect,
Upgrade, Content-Encoding, Proxy-Connection, a header sent twice, obs-fold, a bare CR or
LF, a control character, whitespace ending a value, a head over MAX_HEAD) is `HAND_OVER`:
aiohttp parses it and answers exactly as it did before the fast path existed. A request
recognised here is one aiohttp would also have parsed, with the same headers, keep-alive
and framing, whichever aiohttp version the floor allows (tests/test_http_head.py checks
that against aiohttp's own parser).
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from multidict import CIMultiDict, CIMultiDictProxy

#: the longest head recognised (aiohttp's own limit for one line is 8190 bytes)
MAX_HEAD: Final = 8190
#: more headers than this go to aiohttp (which allows 128)
MAX_FIELDS: Final = 64

#: a header line: a token, the colon right after it, then visible characters, spaces, tabs
#: and obs-text (what aiohttp decodes as UTF-8 with surrogateescape); no CR, LF, NUL or
#: other control character anywhere
_FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):([\t\x20-\x7e\x80-\xff]*)")
#: a path the fast path can compare byte for byte with the request target
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")
#: headers whose meaning the fast path leaves to aiohttp and the routed pipeline
_HANDED_OVER: Final = frozenset(
    {
        "transfer-encoding",
        "expect",
        "upgrade",
        "content-encoding",
        "sec-websocket-key1",
        "proxy-connection",  # llhttp reads it as Connection
    }
)


class HandOver:
    """Not a request the fast path serves: aiohttp takes the connection from here on."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "HAND_OVER"


HAND_OVER: Final = HandOver()


class RequestHead(NamedTuple):
    headers: CIMultiDictProxy[str]
    content_length: int
    keep_alive: bool
    size: int  # bytes of the head, blank line included: the body follows


def request_line(path: str) -> bytes | None:
    """The exact request line of a webhook POST to `path`, or None when the path holds
    anything (a percent-escape, a space, a query) that byte equality would get wrong."""
    if not _PLAIN_PATH.fullmatch(path):
        return None
    return b"POST " + path.encode("ascii") + b" HTTP/1.1\r\n"


def read_head(
    buffer: bytes | bytearray, start: int, line: bytes, max_body: int
) -> RequestHead | HandOver | None:
    """The head at `start` in `buffer` when it is a plain webhook POST whose request line
    is `line` and whose body is at most `max_body` bytes; HAND_OVER when it is anything
    else; None while the bytes so far could still become one."""
    if not buffer.startswith(line, start):
        return None if line.startswith(buffer[start : start + len(line)]) else HAND_OVER
    fields_at = start + len(line)
    end = buffer.find(b"\r\n\r\n", fields_at - 2, start + MAX_HEAD)
    if end < 0:
        return None if len(buffer) - start < MAX_HEAD else HAND_OVER
    if end < fields_at:  # no header at all, so no Host
        return HAND_OVER
    fields = buffer[fields_at:end].split(b"\r\n")
    if len(fields) > MAX_FIELDS:
        return HAND_OVER
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for field in fields:
        match = _FIELD.fullmatch(field)
        if match is None:
            return HAND_OVER
        name = match[1].decode("ascii")
        lowered = name.lower()
        if lowered in seen or lowered in _HANDED_OVER:
            return HAND_OVER
        value = match[2].lstrip(b" \t")
        if value.endswith((b" ", b"\t")):  # aiohttp before 3.14.5 keeps trailing OWS
            return HAND_OVER
        seen.add(lowered)
        pairs.append((name, value.decode("utf-8", "surrogateescape")))
    if "host" not in seen or "content-length" not in seen:
        return HAND_OVER
    headers = CIMultiDictProxy(CIMultiDict(pairs))
    length = headers["Content-Length"]
    if not (length.isascii() and length.isdigit()) or len(length) > 18:
        return HAND_OVER
    content_length = int(length)
    if content_length > max_body:  # aiohttp's way answers 413 without reading the body
        return HAND_OVER
    keep_alive = True
    connection = headers.get("Connection")
    if connection is not None:
        tokens = {token.strip().lower() for token in connection.split(",")}
        if not tokens <= {"keep-alive", "close", ""}:
            return HAND_OVER  # Upgrade, or hop-by-hop names: aiohttp's to judge
        keep_alive = "close" not in tokens
    return RequestHead(headers, content_length, keep_alive, end + 4 - start)

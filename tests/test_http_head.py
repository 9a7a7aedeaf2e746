"""The fast path's recogniser of a plain webhook POST (gateway.web.http_head).

Besides the shapes it must take and leave, one property carries the safety of the fast
path: whatever bytes it recognises as a request, aiohttp's own parser (the C one that
serves) reads as the same request, with the same headers, keep-alive and framing, so the
two ways can never disagree on where a request ends.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import HttpRequestParser
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from gateway.web.http_head import (
    HAND_OVER,
    MAX_FIELDS,
    MAX_HEAD,
    RequestHead,
    read_head,
    request_line,
)
from tests.support.payloads import payload

PATH = "/webhooks/idwise"
LINE = request_line(PATH)
assert LINE is not None
MAX_BODY = 65536
BODY = payload("Finished Journey", event_id="head-1")
NEXT = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"


def webhook(*fields: bytes, body: bytes = BODY, length: bool = True, line: bytes = LINE) -> bytes:
    head = [b"Host: 127.0.0.1"]
    if length:
        head.append(b"Content-Length: %d" % len(body))
    return line + b"\r\n".join([*head, *fields]) + b"\r\n\r\n" + body


# ---------------------------------------------------------------------------- recognised
def test_a_plain_webhook_post_is_recognised() -> None:
    data = webhook(b"Authorization: Bearer t0k3n", b"Content-Type: application/json")
    head = read_head(data, 0, LINE, MAX_BODY)
    assert isinstance(head, RequestHead)
    assert head.content_length == len(BODY)
    assert data[head.size :] == BODY
    assert head.keep_alive
    assert head.headers["authorization"] == "Bearer t0k3n"
    assert head.headers["Content-Type"] == "application/json"
    assert list(head.headers) == ["Host", "Content-Length", "Authorization", "Content-Type"]


@pytest.mark.parametrize(
    ("value", "keep_alive"),
    [(b"close", False), (b"Close", False), (b"keep-alive", True), (b"keep-alive, close", False)],
)
def test_connection_close_is_read(value: bytes, keep_alive: bool) -> None:
    head = read_head(webhook(b"Connection: " + value), 0, LINE, MAX_BODY)
    assert isinstance(head, RequestHead)
    assert head.keep_alive is keep_alive


def test_values_lose_their_leading_whitespace_and_keep_obs_text() -> None:
    head = read_head(webhook(b"X-Name: \t caf\xc3\xa9 \xff"), 0, LINE, MAX_BODY)
    assert isinstance(head, RequestHead)
    # as aiohttp decodes: UTF-8, with surrogateescape for what is not
    assert head.headers["X-Name"] == "café \udcff"


def test_only_the_head_is_read_from_a_pipelined_buffer() -> None:
    data = webhook() + webhook()
    head = read_head(data, 0, LINE, MAX_BODY)
    assert isinstance(head, RequestHead)
    after = head.size + head.content_length
    assert data[after:] == webhook()
    assert read_head(data, after, LINE, MAX_BODY) == head  # the next one, where it starts


def test_a_body_still_to_come_does_not_matter_to_the_head() -> None:
    data = webhook()
    head = read_head(data[: -len(BODY)], 0, LINE, MAX_BODY)
    assert isinstance(head, RequestHead)
    assert head.content_length == len(BODY)


# --------------------------------------------------------------------------- incomplete
@pytest.mark.parametrize("cut", [0, 1, 5, len(LINE) - 1, len(LINE), len(LINE) + 10])
def test_a_head_cut_short_waits_for_more(cut: int) -> None:
    assert read_head(webhook()[:cut], 0, LINE, MAX_BODY) is None


def test_a_head_that_never_ends_is_handed_over_past_the_limit() -> None:
    data = LINE + b"Host: x\r\nX-Pad: " + b"a" * MAX_HEAD
    assert read_head(data[: MAX_HEAD - 1], 0, LINE, MAX_BODY) is None
    assert read_head(data[:MAX_HEAD], 0, LINE, MAX_BODY) is HAND_OVER
    assert read_head(data, 0, LINE, MAX_BODY) is HAND_OVER


# ---------------------------------------------------------------------------- handed over
HANDED_OVER = {
    "another method": webhook(line=b"PUT /webhooks/idwise HTTP/1.1\r\n"),
    "lower-case method": webhook(line=b"post /webhooks/idwise HTTP/1.1\r\n"),
    "another path": webhook(line=b"POST /webhooks/other HTTP/1.1\r\n"),
    "a longer path": webhook(line=b"POST /webhooks/idwise/ HTTP/1.1\r\n"),
    "a query string": webhook(line=b"POST /webhooks/idwise?a=1 HTTP/1.1\r\n"),
    "an escaped path": webhook(line=b"POST /webhooks/%69dwise HTTP/1.1\r\n"),
    "an absolute target": webhook(line=b"POST http://x/webhooks/idwise HTTP/1.1\r\n"),
    "HTTP/1.0": webhook(line=b"POST /webhooks/idwise HTTP/1.0\r\n"),
    "HTTP/2 prior knowledge": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "two spaces": webhook(line=b"POST  /webhooks/idwise HTTP/1.1\r\n"),
    "a bare LF after the request line": webhook(line=b"POST /webhooks/idwise HTTP/1.1\n"),
    "TLS on the plain port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "no Host": LINE + b"Content-Length: 2\r\n\r\n{}",
    "no header at all": LINE + b"\r\n{}",
    "no Content-Length": webhook(length=False),
    "chunked": webhook(b"Transfer-Encoding: chunked"),
    "Transfer-Encoding beside Content-Length": webhook(b"Transfer-Encoding: identity"),
    "Expect": webhook(b"Expect: 100-continue"),
    "Upgrade": webhook(b"Upgrade: websocket", b"Connection: Upgrade"),
    "Connection naming a header": webhook(b"Connection: keep-alive, X-Secret"),
    "Proxy-Connection": webhook(b"Proxy-Connection: close"),
    "Content-Encoding": webhook(b"Content-Encoding: gzip"),
    "identity Content-Encoding": webhook(b"Content-Encoding: identity"),
    "old WebSocket key": webhook(b"Sec-WebSocket-Key1: 1"),
    "Content-Length twice": webhook(b"Content-Length: %d" % len(BODY)),
    "Host twice": webhook(b"host: other"),
    "a header sent twice": webhook(b"X-Forwarded-For: 1.2.3.4", b"x-forwarded-for: 5.6.7.8"),
    "signed Content-Length": webhook(b"Content-Length: +%d" % len(BODY), length=False),
    "hex Content-Length": webhook(b"Content-Length: 0x10", length=False),
    "Content-Length with a space inside": webhook(b"Content-Length: 1 2", length=False),
    "Content-Length list": webhook(b"Content-Length: 5, 5", length=False),
    "non-ASCII digits": webhook("Content-Length: ١٢".encode(), length=False),
    "a huge Content-Length": webhook(b"Content-Length: " + b"9" * 40, length=False),
    "a body over the limit": webhook(body=b"x" * (MAX_BODY + 1)),
    "space before the colon": webhook(b"X-Name : v"),
    "tab before the colon": webhook(b"X-Name\t: v"),
    "no colon": webhook(b"X-Name v"),
    "empty name": webhook(b": v"),
    "a separator in the name": webhook(b"X(Name): v"),
    "a non-ASCII name": webhook("X-Namé: v".encode()),
    "obs-fold": webhook(b"X-Name: v", b" continued"),
    "a bare CR in a value": webhook(b"X-Name: a\rb"),
    "a bare LF in a value": webhook(b"X-Name: a\nb"),
    "a bare LF between headers": webhook(b"X-Name: a\nX-Other: b"),
    "NUL in a value": webhook(b"X-Name: a\x00b"),
    # aiohttp 3.14.0-3.14.4 keep trailing whitespace in a value, later ones drop it
    "a value ending in a space": webhook(b"X-Name: a "),
    "a value ending in a tab": webhook(b"X-Name: a\t"),
    "a Content-Length ending in a space": webhook(b"Content-Length: %d " % len(BODY), length=False),
    "DEL in a value": webhook(b"X-Name: a\x7fb"),
    "a control character in a value": webhook(b"X-Name: a\x01b"),
    "too many headers": webhook(*[b"X-H%d: v" % n for n in range(MAX_FIELDS)]),
    "a head over the limit": webhook(b"X-Pad: " + b"a" * MAX_HEAD),
}


@pytest.mark.parametrize("data", HANDED_OVER.values(), ids=HANDED_OVER.keys())
def test_anything_but_the_plain_shape_is_handed_over(data: bytes) -> None:
    assert read_head(data, 0, LINE, MAX_BODY) is HAND_OVER


def test_the_body_limit_is_the_one_given() -> None:
    data = webhook()
    assert isinstance(read_head(data, 0, LINE, len(BODY)), RequestHead)
    assert read_head(data, 0, LINE, len(BODY) - 1) is HAND_OVER


@pytest.mark.parametrize("path", ["/hooks", "/a/b-c_d.e~f", "/x;v=1", "/", "/it's@:+,$!*()="])
def test_a_plain_path_has_an_exact_request_line(path: str) -> None:
    assert request_line(path) == f"POST {path} HTTP/1.1\r\n".encode()


@pytest.mark.parametrize("path", ["/a b", "/a%20b", "/a?b", "/a#b", "/é", "relative", '/"q"'])
def test_a_path_byte_equality_would_get_wrong_has_no_fast_path(path: str) -> None:
    assert request_line(path) is None


# ----------------------------------------------------- the same request as aiohttp's
def aiohttp_reads(*pieces: bytes) -> list[tuple[Any, bytes, bool]] | Exception:
    """The messages aiohttp's server parser reads from `pieces`, fed one after another, with
    their bodies and whether each body was complete; or the error it raises."""
    loop = asyncio.new_event_loop()
    try:
        parser = HttpRequestParser(
            BaseProtocol(loop),
            loop,
            2**16,
            max_line_size=8190,
            max_field_size=8190,
            max_headers=128,
            auto_decompress=False,
        )
        read = []
        for piece in pieces:
            try:
                messages, _, _ = parser.feed_data(piece)
            except Exception as exc:
                return exc
            read += [
                (message, payload.read_nowait(-1), payload.is_eof())
                for message, payload in messages
            ]
        return read
    finally:
        loop.close()


def assert_read_alike(data: bytes) -> None:
    """If the recogniser takes the start of `data` as a request, aiohttp reads the same
    request from the same bytes, and its request ends where the recogniser's does: fed the
    rest and then another request, it reads that request next (after `Connection: close`
    aiohttp refuses anything more, so nothing is fed)."""
    head = read_head(data, 0, LINE, MAX_BODY)
    event("recognised" if isinstance(head, RequestHead) else repr(head))
    before = b"HTTP/1.1 junk\r\n\r\nbefore"
    assert read_head(before + data, len(before), LINE, MAX_BODY) == head  # from an offset
    if not isinstance(head, RequestHead):
        return
    end = head.size + head.content_length
    if len(data) < end:
        return  # the body is still to come
    pieces = (data[:end], NEXT) if head.keep_alive else (data[:end],)
    read = aiohttp_reads(*pieces)
    assert not isinstance(read, Exception), f"recognised, but aiohttp refuses it: {read!r}"
    assert len(read) == len(pieces), read
    message, body, complete = read[0]
    assert (message.method, message.path, message.version) == ("POST", PATH, (1, 1))
    assert [(k.lower(), v) for k, v in message.headers.items()] == [
        (k.lower(), v) for k, v in head.headers.items()
    ]
    assert message.should_close is not head.keep_alive
    assert not message.chunked and not message.upgrade and message.compression is None
    assert body == data[head.size : end]
    assert complete or head.content_length == 0
    if head.keep_alive:
        assert read[1][0].path == "/next"  # the same framing: the next request starts here


TOKEN = st.text("abcdefXYZ0123456789-_!#$%&'*+.^`|~", min_size=1, max_size=8).map(str.encode)
VISIBLE = st.binary(max_size=10).map(
    lambda b: bytes(c for c in b if c == 9 or (c >= 32 and c != 127))
)
NAMES = st.one_of(
    TOKEN,
    TOKEN,
    st.sampled_from(
        [
            b"Host",
            b"Content-Length",
            b"content-length",
            b"Transfer-Encoding",
            b"Connection",
            b"Expect",
            b"Content-Encoding",
            b"Authorization",
            b"X-Forwarded-For",
            b"Upgrade",
            b"Proxy-Connection",
        ]
    ),
    st.text("abcXYZ-_!#~:\t \x00é", min_size=1, max_size=6).map(lambda t: t.encode()),
)
VALUES = st.one_of(
    VISIBLE,
    VISIBLE,
    st.sampled_from([b"", b"close", b"keep-alive", b"chunked", b"0", b"5", b"gzip", b"x"]),
    st.text("0123456789 +-,\t xa\x00\r\n\x7fé\x0b", max_size=8).map(lambda t: t.encode()),
    st.binary(max_size=8),
)
FIELD = st.tuples(NAMES, st.sampled_from([b":", b": ", b": ", b":\t", b" :", b""]), VALUES)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=st.lists(FIELD, max_size=6),
    with_host=st.sampled_from([True, True, True, False]),
    length=st.one_of(
        st.integers(0, 12), st.integers(0, 12), st.none(), st.sampled_from([b"007", b"1 ", b" 3"])
    ),
    separator=st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r"]),
    body=st.binary(max_size=12),
)
@example(fields=[], with_host=True, length=2, separator=b"\r\n", body=b"{}")
def test_what_is_recognised_aiohttp_reads_alike(
    fields: list[tuple[bytes, bytes, bytes]],
    with_host: bool,
    length: int | bytes | None,
    separator: bytes,
    body: bytes,
) -> None:
    lines = [name + colon + value for name, colon, value in fields]
    if with_host:
        lines.insert(0, b"Host: h")
    if isinstance(length, int):
        lines.append(b"Content-Length: %d" % length)
        body = (body * 12)[:length].ljust(length, b"x")
    elif isinstance(length, bytes):  # odd spellings of a number, with a body that long
        lines.append(b"Content-Length:" + length)
        body = b"x" * int(length)
    assert_read_alike(LINE + separator.join(lines) + b"\r\n\r\n" + body)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 3), st.binary(min_size=1, max_size=3)),
        min_size=1,
        max_size=2,
    )
)
def test_a_mutated_webhook_that_is_recognised_aiohttp_reads_alike(
    edits: list[tuple[int, int, bytes]],
) -> None:
    data = bytearray(webhook(b"Authorization: Bearer t", b"Connection: keep-alive", body=b"{}"))
    for at, kind, piece in edits:
        at %= len(data) + 1
        if kind == 0:
            data[at:at] = piece  # insert
        elif kind == 1:
            del data[at : at + len(piece)]  # delete
        else:
            data[at : at + len(piece)] = piece  # replace
    assert_read_alike(bytes(data))


@settings(max_examples=500, deadline=None)
@given(
    fields=st.lists(st.tuples(TOKEN, VISIBLE), max_size=8, unique_by=lambda f: f[0].lower()),
    body=st.binary(max_size=20),
)
def test_any_tokens_and_visible_values_aiohttp_reads_alike(
    fields: list[tuple[bytes, bytes]], body: bytes
) -> None:
    taken = {b"host", b"content-length"}
    lines = [name + b": " + value for name, value in fields if name.lower() not in taken]
    assert_read_alike(webhook(*lines, body=body))

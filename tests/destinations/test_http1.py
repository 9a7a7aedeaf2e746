"""HTTP/1.1 on the wire, without a network: URLs to targets, requests to bytes, and
responses parsed however their bytes are split."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.destinations.http1 import (
    MAX_DRAIN,
    BadResponse,
    InvalidHeader,
    InvalidTarget,
    ResponseParser,
    encode_request,
    parse_target,
)


# -------------------------------------------------------------------------------- targets
@pytest.mark.parametrize(
    ("url", "tls", "host", "port", "authority", "path"),
    [
        ("http://risk:8000/idwise", False, "risk", 8000, "risk:8000", "/idwise"),
        ("http://risk/idwise", False, "risk", 80, "risk", "/idwise"),
        ("http://risk:80/", False, "risk", 80, "risk", "/"),
        ("https://hooks.slack.com/services/T/B/x", True, "hooks.slack.com", 443,
         "hooks.slack.com", "/services/T/B/x"),
        ("HTTPS://Hooks.Slack.com:8443", True, "hooks.slack.com", 8443, "hooks.slack.com:8443",
         "/"),
        ("http://[::1]:9000/a?b=c", False, "::1", 9000, "[::1]:9000", "/a?b=c"),
        ("http://bücher.example/ä b?q=ü x#frag", False, "xn--bcher-kva.example", 80,
         "xn--bcher-kva.example", "/%C3%A4%20b?q=%C3%BC%20x"),
        ("http://h/already%20quoted?x=%2F", False, "h", 80, "h", "/already%20quoted?x=%2F"),
        ("http://h/100%/a%zz?p=5%&q=%4", False, "h", 80, "h", "/100%25/a%25zz?p=5%25&q=%254"),
    ],
)  # fmt: skip
def test_targets(url: str, tls: bool, host: str, port: int, authority: str, path: str) -> None:
    target = parse_target(url)
    assert (target.tls, target.host, target.port, target.authority, target.path) == (
        tls,
        host,
        port,
        authority,
        path,
    )
    assert target.authorization is None


def test_userinfo_becomes_basic_credentials() -> None:
    target = parse_target("https://svc%40corp:s3cr%3At@api.internal/hook")
    assert target.authorization == "Basic " + base64.b64encode(b"svc@corp:s3cr:t").decode()
    assert target.authority == "api.internal"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/x",
        "host/x",
        "http:///x",
        "http://host:99999/x",
        "http://host:port/x",
        "http://host/x\r\nX-Injected: 1",
        "http://ho\x00st/",
    ],
)
def test_invalid_targets(url: str) -> None:
    with pytest.raises(InvalidTarget) as caught:
        parse_target(url)
    assert "host/x" not in str(caught.value)  # the URL may be a credential: never quoted


# ------------------------------------------------------------------------------- requests
def test_a_request_is_framed_by_the_client_alone() -> None:
    target = parse_target("http://user:pw@risk:8000/idwise")
    wire = encode_request(
        "POST",
        target,
        {
            "Content-Type": "application/json",
            "content-length": "1",
            "Transfer-Encoding": "chunked",
            "Connection": "close",
            "Host": "risk.internal",
        },
        b"{}",
    )
    head, _, body = wire.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /idwise HTTP/1.1"
    assert lines[1:] == [
        "Host: risk.internal",
        "Accept: */*",
        "Content-Type: application/json",
        "Authorization: Basic " + base64.b64encode(b"user:pw").decode(),
        "Content-Length: 2",
    ]
    assert body == b"{}"


def test_a_configured_authorization_wins_over_the_urls() -> None:
    wire = encode_request("POST", parse_target("http://u:p@h/"), {"authorization": "Bearer t"}, b"")
    assert wire.count(b"uthorization") == 1
    assert b"authorization: Bearer t\r\n" in wire


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("POST", {"X-A": "1\r\nX-B: 2"}),
        ("POST", {"X-A": "1\n"}),
        ("POST", {"X-A": "nul\x00"}),
        ("POST", {"X A": "1"}),
        ("POST", {"X-A:": "1"}),
        ("POST", {"": "1"}),
        ("PO ST", {}),
        ("POST /x HTTP/1.1\r\n", {}),
    ],
)
def test_anything_that_would_split_a_request_is_refused(
    method: str, headers: dict[str, str]
) -> None:
    with pytest.raises(InvalidHeader):
        encode_request(method, parse_target("http://h/"), headers, b"")


def test_a_configured_accept_replaces_the_default() -> None:
    wire = encode_request("POST", parse_target("http://h/"), {"Accept": "application/json"}, b"")
    assert wire.count(b"Accept:") == 1
    assert b"Accept: application/json\r\n" in wire


def test_a_target_shows_no_credential() -> None:
    target = parse_target("https://user:pa55@hooks.example/services/T0/B0/s3cretTOKEN")
    assert "s3cretTOKEN" not in repr(target)
    assert "pa55" not in repr(target) and "Basic" not in repr(target)


def test_header_values_may_hold_any_other_text() -> None:
    wire = encode_request("POST", parse_target("http://h/"), {"X-Name": "Zoë\ttab"}, b"")
    assert "X-Name: Zoë\ttab\r\n".encode() in wire


# ------------------------------------------------------------------------------ responses
def parse(*pieces: bytes, keep: int = 4096, head_only: bool = False) -> ResponseParser:
    parser = ResponseParser(keep, head_only)
    for piece in pieces:
        if parser.feed(piece):
            break
    else:
        assert parser.end(), "no answer"
    return parser


def test_content_length() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nRetry-After: 3\r\n\r\nhello")
    assert (parser.status, parser.body, parser.reusable) == (200, b"hello", True)
    assert parser.headers == {"content-length": "5", "retry-after": "3"}


def test_a_status_line_without_a_reason() -> None:
    assert parse(b"HTTP/1.1 503\r\nContent-Length: 0\r\n\r\n").status == 503


def test_repeated_equal_content_lengths_are_one() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok")
    assert (parser.body, parser.reusable) == (b"ok", True)


def test_a_content_length_list_of_one_value_is_that_value() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok")
    assert (parser.body, parser.reusable) == (b"ok", True)


def test_transfer_encoding_wins_over_content_length_and_the_connection_is_let_go() -> None:
    # the peer's framing is in doubt (RFC 9112 6.3): read the chunks, do not reuse
    parser = parse(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n"
    )
    assert (parser.body, parser.reusable) == (b"ok", False)


def test_a_transfer_coding_other_than_chunked_last_is_read_to_the_close() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc", b"def")
    assert (parser.body, parser.reusable) == (b"abcdef", False)


@pytest.mark.parametrize("status", [204, 304])
def test_statuses_without_a_body(status: int) -> None:
    parser = ResponseParser(4096)
    assert parser.feed(b"HTTP/1.1 %d X\r\nContent-Length: 10\r\n\r\n" % status)
    assert (parser.status, parser.body, parser.reusable) == (status, b"", True)


def test_the_answer_to_head_has_no_body() -> None:
    parser = ResponseParser(4096, head_only=True)
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    assert (parser.body, parser.reusable) == (b"", True)


def test_bytes_after_the_answer_make_the_connection_unusable() -> None:
    parser = ResponseParser(4096)
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokX")
    assert not parser.reusable
    parser = ResponseParser(4096)
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert parser.reusable
    assert parser.feed(b"late")
    assert not parser.reusable


def test_only_the_first_bytes_are_kept() -> None:
    parser = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", keep=4)
    assert (parser.body, parser.reusable) == (b"0123", True)


def test_a_body_past_the_drain_limit_ends_the_exchange_early() -> None:
    parser = ResponseParser(8)
    assert not parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_DRAIN * 4))
    finished = False
    for _ in range(8):
        finished = parser.feed(b"x" * 65536)
        if finished:
            break
    assert finished
    assert (parser.body, parser.reusable) == (b"x" * 8, False)


def test_an_answer_cut_short_still_counts_once_its_head_arrived() -> None:
    """The status is the receiver's decision; a body cut short (the peer closed, or the
    deadline came) does not undo it, but the connection is not reused."""
    parser = ResponseParser(4096)
    assert not parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert parser.end()
    assert (parser.status, parser.body, parser.reusable) == (200, b"abc", False)


def test_no_answer_without_a_whole_head() -> None:
    parser = ResponseParser(4096)
    assert not parser.end()
    assert not parser.received
    parser = ResponseParser(4096)
    assert not parser.feed(b"HTTP/1.1 200 OK\r\nContent-Len")
    assert not parser.end()
    assert parser.received


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: \xd9\xa3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXY",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 9000,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + b"X: y\r\n" * 2000,
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 000 Zero\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1 600 High\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 9999999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 16 + b"\r\n",
        b"HTTP/1.1  200 OK\r\n\r\n",
        b"HTTP/1.2 200 OK\r\n\r\n",
        b"http/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 12000,
    ],
)
def test_unreadable_answers(wire: bytes) -> None:
    with pytest.raises(BadResponse):
        ResponseParser(4096).feed(wire)


framing = st.sampled_from(["length", "chunked", "close"])


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, int, bytes, str]:
    status = draw(st.integers(200, 599).filter(lambda s: s not in (204, 304)))
    body = draw(st.binary(max_size=600))
    how = draw(framing)
    head = b"HTTP/1.1 %d Reason Words\r\nX-Request: a\r\n" % status
    if draw(st.booleans()):
        head = b"HTTP/1.1 100 Continue\r\n\r\n" + head
    if how == "length":
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body, status, body, how
    if how == "close":
        return head + b"\r\n" + body, status, body, how
    sizes = draw(st.lists(st.integers(1, 97), max_size=12))
    out = bytearray(head + b"Transfer-Encoding: chunked\r\n\r\n")
    rest = body
    for size in sizes:
        if not rest:
            break
        piece, rest = rest[:size], rest[size:]
        out += b"%x;n=v\r\n" % len(piece) + piece + b"\r\n"
    if rest:
        out += b"%X\r\n" % len(rest) + rest + b"\r\n"
    out += b"0\r\nTrailer: t\r\n\r\n"
    return bytes(out), status, body, how


@given(responses(), st.lists(st.integers(0, 10_000), max_size=24), st.integers(0, 700))
@settings(max_examples=300, deadline=None)
def test_an_answer_parses_the_same_however_its_bytes_are_split(
    response: tuple[bytes, int, bytes, str], cuts: list[int], keep: int
) -> None:
    wire, status, body, how = response
    points = sorted({c % (len(wire) + 1) for c in cuts})
    pieces = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    parser = parse(*pieces, keep=keep)
    assert parser.status == status
    assert parser.body == body[:keep]
    assert parser.headers["x-request"] == "a"
    assert parser.reusable == (how != "close")

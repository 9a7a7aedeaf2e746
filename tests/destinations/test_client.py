"""The outbound HTTP client against real peers on 127.0.0.1: keep-alive reuse, every way an
answer can be framed, answers that cannot be read, TLS, expiry and closing."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.destinations.client import KEPT_REPLY, ClientClosed, HttpClient
from gateway.destinations.http1 import (
    MAX_DRAIN,
    BadResponse,
    ConnectFailed,
    ConnectionDropped,
    InvalidHeader,
    InvalidTarget,
)
from gateway.errors import RetryableDeliveryError
from tests.support.config import closed_port
from tests.support.destinations import Harness
from tests.support.payloads import payload
from tests.support.raw_http import ScriptedPeer, ScriptedRequest
from tests.support.tls import Certificates

pytestmark = pytest.mark.timeout(15)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
BODY = b'{"event":"Finished Journey"}'


@pytest.fixture
async def peers() -> AsyncIterator[Callable[..., Any]]:
    started: list[ScriptedPeer] = []

    async def start(*args: Any, **options: Any) -> ScriptedPeer:
        peer = await ScriptedPeer(*args, **options).start()
        started.append(peer)
        return peer

    yield start
    for peer in started:
        await peer.stop()


def answers(*replies: Any) -> Callable[[ScriptedRequest], Any]:
    """Answer the n-th request with the n-th reply (the last one again after that)."""
    queue = list(replies)

    def answer(request: ScriptedRequest) -> Any:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return answer


async def post(client: HttpClient, url: str, headers: dict[str, str] | None = None) -> Any:
    return await client.exchange("POST", url, headers or {}, BODY, 5.0)


async def post_twice(peer: ScriptedPeer) -> tuple[Any, Any]:
    """Two exchanges with `peer`, one after the other, through one client."""
    async with HttpClient() as client:
        return await post(client, peer.url()), await post(client, peer.url())


def connections(peer: ScriptedPeer) -> list[int]:
    """The connection each request came on, in order."""
    return [request.connection for request in peer.requests]


# ------------------------------------------------------------------------------ keep-alive
async def test_sequential_exchanges_share_one_connection(peers: Any) -> None:
    peer = await peers()
    async with HttpClient() as client:
        replies = [await post(client, peer.url()) for _ in range(20)]
    assert {(r.status, r.body) for r in replies} == {(200, b"ok")}
    assert peer.connections == 1
    assert len(peer.requests) == 20
    assert [r.body for r in peer.requests] == [BODY] * 20


async def test_concurrent_exchanges_open_one_connection_each_then_reuse_them(peers: Any) -> None:
    peer = await peers()
    async with HttpClient() as client:
        for _ in range(3):
            await asyncio.gather(*(post(client, peer.url()) for _ in range(8)))
    assert len(peer.requests) == 24
    assert peer.connections <= 8


async def test_connection_close_in_the_answer_is_honoured(peers: Any) -> None:
    peer = await peers(
        answers(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    )
    async with HttpClient() as client:
        for _ in range(3):
            assert (await post(client, peer.url())).status == 200
    assert connections(peer) == [0, 1, 2]


async def test_an_http_1_0_answer_is_not_reused_unless_it_says_keep_alive(peers: Any) -> None:
    closing = await peers(answers(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    keeping = await peers(
        answers(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: Keep-Alive\r\n\r\nok")
    )
    async with HttpClient() as client:
        for _ in range(2):
            await post(client, closing.url())
            await post(client, keeping.url())
    assert connections(closing) == [0, 1]
    assert connections(keeping) == [0, 0]


async def test_an_idle_connection_expires_and_is_closed(peers: Any) -> None:
    peer = await peers()
    async with HttpClient(keepalive=0.2) as client:
        await post(client, peer.url())
        await asyncio.sleep(0.6)
        assert peer.eofs == 1  # the sweeper closed it while idle
        await post(client, peer.url())
    assert connections(peer) == [0, 1]


async def test_bytes_on_an_idle_connection_retire_it(peers: Any) -> None:
    """A reply with more bytes than its Content-Length: the extra would be read as the
    next request's answer."""
    peer = await peers(answers(OK + b"HTTP/1.1 200 OK\r\n\r\n", OK))
    first, second = await post_twice(peer)
    assert (first.status, second.status) == (200, 200)
    assert connections(peer) == [0, 1]


# ------------------------------------------------------------------------------- framing
async def test_a_chunked_answer_with_extensions_and_trailer(peers: Any) -> None:
    reply = (
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\nX-Trace: a\r\nx-trace: b\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Checksum: 1\r\n\r\n"
    )
    peer = await peers(answers(reply))
    first, _ = await post_twice(peer)
    assert (first.status, first.body) == (202, b"hello world")
    assert first.headers["x-trace"] == "a, b"
    assert connections(peer) == [0, 0]


async def test_an_answer_framed_by_closing_the_connection(peers: Any) -> None:
    peer = await peers(
        answers(b"HTTP/1.1 500 Oops\r\nContent-Type: text/plain\r\n\r\nbroken"), close_after=True
    )
    first, second = await post_twice(peer)
    assert (first.status, first.body, second.status) == (500, b"broken", 500)
    assert connections(peer) == [0, 1]


async def test_interim_answers_are_skipped(peers: Any) -> None:
    reply = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone"
    )
    peer = await peers(answers(reply))
    reply, _ = await post_twice(peer)
    assert (reply.status, reply.body) == (201, b"done")
    assert "link" not in reply.headers
    assert connections(peer) == [0, 0]


async def test_no_body_after_204(peers: Any) -> None:
    peer = await peers(answers(b"HTTP/1.1 204 No Content\r\n\r\n"))
    async with HttpClient() as client:
        replies = [await post(client, peer.url()) for _ in range(3)]
    assert [(r.status, r.body) for r in replies] == [(204, b"")] * 3
    assert peer.connections == 1


async def test_a_long_answer_is_kept_in_part_and_read_to_its_end(peers: Any) -> None:
    text = bytes(range(256)) * 64  # 16 KiB: more than is kept, less than is drained
    peer = await peers(answers(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(text) + text))
    first, _ = await post_twice(peer)
    assert first.body == text[:KEPT_REPLY]
    assert connections(peer) == [0, 0]


async def test_a_huge_answer_is_not_read_to_its_end(peers: Any) -> None:
    size = MAX_DRAIN * 8
    peer = await peers(
        answers(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size)
    )
    first, second = await post_twice(peer)
    assert (first.status, len(first.body), second.status) == (200, KEPT_REPLY, 200)
    assert connections(peer) == [0, 1]


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/2 200\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * (70 * 1024) + b"\r\n\r\n",
    ],
    ids=["http2", "icy", "status", "header", "two-lengths", "negative", "chunk", "101", "long"],
)
async def test_an_unreadable_answer_is_a_bad_response(peers: Any, reply: bytes) -> None:
    peer = await peers(answers(reply))
    async with HttpClient() as client:
        with pytest.raises(BadResponse):
            await post(client, peer.url())
    assert len(peer.requests) == 1


async def test_an_answer_cut_short_counts_and_is_not_sent_again(peers: Any) -> None:
    """The status line arrived: the receiver has decided, whatever became of the body."""
    peer = await peers(
        answers(OK, (b"HTTP/1.1 503 Busy\r\nContent-Length: 10\r\n\r\nabc", True), OK)
    )
    async with HttpClient() as client:
        await post(client, peer.url("/warm"))  # a reused connection, to rule out the resend
        cut = await post(client, peer.url())
        await post(client, peer.url())
    assert (cut.status, cut.body) == (503, b"abc")
    assert connections(peer) == [0, 0, 1]


async def test_a_body_still_coming_at_the_deadline_does_not_undo_the_answer(
    peers: Any,
) -> None:
    """A 200 whose chunked body stalls: the answer stands at the deadline (aiohttp's client
    returned at the first bytes too); it is not a timeout to be retried."""
    stalled = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n"
    peer = await peers(answers((stalled, 3.0), OK))
    async with HttpClient() as client:
        started = asyncio.get_running_loop().time()
        reply = await client.exchange("POST", peer.url(), {}, BODY, 0.5)
        elapsed = asyncio.get_running_loop().time() - started
        await post(client, peer.url())
    assert (reply.status, reply.body) == (200, b"ok")
    assert 0.4 < elapsed < 2.0
    assert connections(peer) == [0, 1]  # the stalled one is not reused


async def test_an_answer_framed_by_the_close_then_reset_is_read(peers: Any) -> None:
    """A peer that answers and resets (unread request bytes in its buffer make the close an
    RST): the answer is whole, the permanent 401 stands."""
    peer = await peers(answers((b"HTTP/1.1 401 No\r\nConnection: close\r\n\r\nnope", "reset")))
    async with HttpClient() as client:
        reply = await post(client, peer.url())
    assert (reply.status, reply.body) == (401, b"nope")


async def test_a_reused_connection_closed_without_a_word_is_resent_once(peers: Any) -> None:
    peer = await peers(answers(OK, None, OK))
    first, second = await post_twice(peer)
    assert (first.status, second.status) == (200, 200)
    assert connections(peer) == [0, 0, 1]


async def test_a_fresh_connection_closed_without_a_word_is_not_resent(peers: Any) -> None:
    peer = await peers(answers(None))
    async with HttpClient() as client:
        with pytest.raises(ConnectionDropped):
            await post(client, peer.url())
    assert len(peer.requests) == 1


# ------------------------------------------------------------------------------ requests
async def test_the_request_on_the_wire(peers: Any) -> None:
    peer = await peers()
    async with HttpClient() as client:
        await client.exchange(
            "PUT",
            peer.url("/a path/ü?q=1 2&x"),
            {"Content-Type": "application/json", "Content-Length": "999", "X-Id": "7"},
            BODY,
            5.0,
        )
    (request,) = peer.requests
    lines = request.head.split("\r\n")
    assert lines[0] == "PUT /a%20path/%C3%BC?q=1%202&x HTTP/1.1"
    assert request.header("Host") == f"127.0.0.1:{peer.port}"
    assert request.header("Content-Length") == str(len(BODY))
    assert request.header("X-Id") == "7"
    assert sum(line.lower().startswith("content-length:") for line in lines) == 1
    assert request.body == BODY


async def test_credentials_in_the_url_become_basic_auth(peers: Any) -> None:
    peer = await peers()
    async with HttpClient() as client:
        await post(client, f"http://us%40er:p%3Ass@127.0.0.1:{peer.port}/hook")
        await post(
            client, f"http://user:pass@127.0.0.1:{peer.port}/hook", {"Authorization": "Bearer t"}
        )
    first, second = peer.requests
    assert first.header("Authorization") == "Basic " + base64.b64encode(b"us@er:p:ss").decode()
    assert second.header("Authorization") == "Bearer t"


async def test_a_header_that_would_split_the_request_is_refused(peers: Any) -> None:
    peer = await peers()
    async with HttpClient() as client:
        with pytest.raises(InvalidHeader):
            await post(client, peer.url(), {"X-A": "1\r\nX-Injected: yes"})
        with pytest.raises(InvalidHeader):
            await post(client, peer.url(), {"X A": "1"})
    assert peer.requests == []


async def test_connection_refused(peers: Any) -> None:
    async with HttpClient() as client:
        with pytest.raises(ConnectFailed) as caught:
            await post(client, f"http://127.0.0.1:{closed_port()}/hook")
    assert isinstance(caught.value.os_error, ConnectionRefusedError)


async def test_an_invalid_url_is_refused_before_connecting() -> None:
    async with HttpClient() as client:
        for url in ("ftp://127.0.0.1/x", "http:///x", "http://127.0.0.1:99999/x"):
            with pytest.raises(InvalidTarget):
                await post(client, url)


async def test_a_closed_client_refuses_exchanges_and_closes_its_connections(peers: Any) -> None:
    peer = await peers()
    client = HttpClient()
    await post(client, peer.url())
    await client.close()
    for _ in range(50):
        if peer.eofs:
            break
        await asyncio.sleep(0.01)
    assert peer.eofs == 1
    with pytest.raises(ClientClosed):
        await post(client, peer.url())


# ------------------------------------------------------------------------------------ TLS
async def test_https_with_a_trusted_certificate(
    peers: Any, certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.cert))
    peer = await peers(tls=certificates.server_context())
    async with HttpClient() as client:
        for host in ("localhost", "127.0.0.1"):
            reply = await post(client, peer.url(scheme="https", host=host))
            assert (reply.status, reply.body) == (200, b"ok")
        await post(client, peer.url(scheme="https"))
    assert len(peer.requests) == 3
    assert peer.connections == 2  # one per host name


async def test_https_with_an_untrusted_certificate_fails_to_connect(
    peers: Any, certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.other_cert))
    peer = await peers(tls=certificates.server_context())
    async with HttpClient() as client:
        with pytest.raises(ConnectFailed) as caught:
            await post(client, peer.url(scheme="https", host="localhost"))
    assert "certificate" in str(caught.value).lower()
    assert peer.requests == []


# ----------------------------------------------------------- through the HTTP destination
async def test_an_unreadable_answer_is_a_retryable_connection_failure(
    harness: Harness, peers: Any
) -> None:
    peer = await peers(answers(b"HTTP/9 200 OK\r\n\r\n"))
    destination = harness.destination({"type": "http", "url": peer.url()})
    error = await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)
    assert error.reason == "connection"
    assert "unreadable answer" in error.detail


async def test_the_deadline_covers_connecting(harness: Harness) -> None:
    """A peer that takes the TCP connection but never answers the TLS handshake: the
    exchange ends at its deadline as a timeout, not as a failure to connect."""
    silent = await harness.silent()
    async with HttpClient() as client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await client.exchange("POST", f"https://127.0.0.1:{silent.port}/", {}, BODY, 0.3)
        elapsed = asyncio.get_running_loop().time() - started
    assert 0.25 < elapsed < 2.0
    assert silent.connections == 1


async def test_the_deadline_covers_the_answer(harness: Harness) -> None:
    silent = await harness.silent()
    async with HttpClient() as client:
        with pytest.raises(TimeoutError):
            await client.exchange("POST", f"http://127.0.0.1:{silent.port}/", {}, BODY, 0.2)
    assert silent.connections == 1

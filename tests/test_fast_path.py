"""The webhook listener's fast path (gateway.web.fast_path) in a real `idwise-gateway serve`
process, over raw sockets: keep-alive, the hand-over to aiohttp mid-connection, bodies that
come late or never, a client that does not read, shutdown with a request in flight, and
answers a client cannot tell from aiohttp's."""

from __future__ import annotations

import asyncio
import itertools
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from gateway.config.load import load_config
from gateway.web.app import create_app
from gateway.web.fast_path import FastPath
from tests.support.config import base_config, write_config
from tests.support.payloads import payload
from tests.support.process import GatewayProcess
from tests.support.raw_http import RawConnection, RawResponse, chunked, request_bytes
from tests.support.store import event_count, stored_keys
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow  # real gateway processes and sockets

_ids = itertools.count()


def fresh(tag: str) -> str:
    return f"fast-{tag}-{next(_ids)}"


def webhook(event_id: str, *, close: bool = False, **options: object) -> bytes:
    return request_bytes(payload("Finished Journey", event_id=event_id), close=close, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("fast")
    process = GatewayProcess(write_config(tmp, base_config(tmp))).start()
    try:
        yield process
    finally:
        process.stop()


def port_of(gateway: GatewayProcess) -> int:
    return int(gateway.config["server"]["port"])


def db_of(gateway: GatewayProcess) -> Path:
    return Path(gateway.config["storage"]["path"])


def accepted(answer: RawResponse | None, event_id: str, status: str = "accepted") -> None:
    assert answer is not None, "no answer"
    assert answer.status == 200, (answer.status, answer.body)
    assert answer.json() == {"status": status, "eventId": event_id}


def closed_by_server(conn: RawConnection, within: float = 5.0) -> bool:
    conn.sock.settimeout(within)
    try:
        return conn.sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


# ------------------------------------------------------------------------- keep-alive
def test_webhooks_on_one_connection_are_each_answered_and_stored(gateway: GatewayProcess) -> None:
    ids = [fresh("keep") for _ in range(3)]
    with RawConnection(port_of(gateway)) as conn:
        for event_id in ids:
            conn.send(webhook(event_id))
            answer = conn.response()
            accepted(answer, event_id)
            assert answer is not None and "connection" not in answer.headers
        conn.send(webhook(ids[0]))  # the same event again, on the same connection
        accepted(conn.response(), ids[0], "duplicate")
    assert set(ids) <= stored_keys(db_of(gateway))


def test_each_200_is_written_only_once_its_event_is_committed(gateway: GatewayProcess) -> None:
    """DESIGN's promise on the fast path: the database file, read by another connection
    the moment each 200 arrives, already holds that event."""
    with RawConnection(port_of(gateway)) as conn:
        for _ in range(5):
            event_id = fresh("committed")
            conn.send(webhook(event_id))
            accepted(conn.response(), event_id)
            assert event_id in stored_keys(db_of(gateway))


def test_connection_close_is_honoured(gateway: GatewayProcess) -> None:
    event_id = fresh("close")
    with RawConnection(port_of(gateway)) as conn:
        conn.send(webhook(event_id, close=True))
        answer = conn.response()
        accepted(answer, event_id)
        assert answer is not None and answer.headers["connection"] == "close"
        assert closed_by_server(conn)


def test_the_connection_is_handed_to_aiohttp_at_the_first_other_request(
    gateway: GatewayProcess,
) -> None:
    """A webhook, a health probe, then webhooks again: aiohttp serves the connection from
    the probe on, and nothing is lost or answered twice at the switch."""
    first, second, third = fresh("before"), fresh("after"), fresh("after")
    with RawConnection(port_of(gateway)) as conn:
        conn.send(
            webhook(first)
            + request_bytes(None, method="GET", path="/healthz", auth=False, close=False)
            + webhook(second)
        )
        accepted(conn.response(), first)
        probe = conn.response()
        assert probe is not None and probe.status == 200 and probe.json() == {"status": "ok"}
        accepted(conn.response(), second)
        conn.send(webhook(third, close=True))
        accepted(conn.response(), third)
    assert {first, second, third} <= stored_keys(db_of(gateway))


def test_a_request_the_fast_path_leaves_is_answered_by_aiohttp(gateway: GatewayProcess) -> None:
    event_id = fresh("expect")
    with RawConnection(port_of(gateway)) as conn:
        conn.send(webhook(event_id, close=True, headers=[("Expect", "100-continue")]))
        while conn._fill():  # everything, until the gateway closes
            pass
    interim, _, final = conn.buffer.partition(b"\r\n\r\n")
    assert interim == b"HTTP/1.1 100 Continue"  # aiohttp's expect handler, then the answer
    assert final.startswith(b"HTTP/1.1 200 OK\r\n")
    assert final.endswith(b'{"status":"accepted","eventId":"%s"}' % event_id.encode())
    assert event_id in stored_keys(db_of(gateway))


# -------------------------------------------------------------------------- the body
def test_a_body_that_comes_after_its_head_is_waited_for(gateway: GatewayProcess) -> None:
    event_id = fresh("late")
    data = webhook(event_id)
    split = data.index(b"\r\n\r\n") + 4 + 10
    with RawConnection(port_of(gateway)) as conn:
        conn.send(data[:split])
        time.sleep(0.3)
        conn.send(data[split : split + 5])
        time.sleep(0.3)
        conn.send(data[split + 5 :])
        accepted(conn.response(), event_id)
        conn.send(webhook(fresh("late")))  # and the connection goes on
        assert conn.response() is not None


def test_a_refusal_before_the_body_arrives_is_heard_and_the_connection_ends(
    gateway: GatewayProcess,
) -> None:
    """401 at the head; the client is still sending its body. The answer must reach it (no
    reset), and the connection ends: its framing past the head was never read."""
    before = event_count(db_of(gateway))
    data = request_bytes(
        payload("Finished Journey", event_id=fresh("401")), auth=False, close=False
    )
    head_end = data.index(b"\r\n\r\n") + 4
    with RawConnection(port_of(gateway)) as conn:
        conn.send(data[:head_end])
        answer = conn.response()
        assert answer is not None and answer.status == 401, answer
        assert answer.headers["connection"] == "close"
        assert answer.json()["error"] == "unauthorized"
        conn.send(data[head_end:])  # read and dropped, not answered
        assert closed_by_server(conn)
    assert event_count(db_of(gateway)) == before


def test_a_client_that_leaves_mid_body_stores_nothing(gateway: GatewayProcess) -> None:
    before = event_count(db_of(gateway))
    data = webhook(fresh("gone"))
    with RawConnection(port_of(gateway)) as conn:
        conn.send(data[: len(data) - 20])
        conn.sock.shutdown(socket.SHUT_WR)
        answer = conn.response()
    assert answer is None or answer.status == 400, answer
    assert event_count(db_of(gateway)) == before
    event_id = fresh("after-gone")
    with RawConnection(port_of(gateway)) as conn:
        conn.send(webhook(event_id, close=True))
        accepted(conn.response(), event_id)


def test_requests_sent_before_the_clients_half_close_are_all_answered(
    gateway: GatewayProcess,
) -> None:
    first, second = fresh("half"), fresh("half")
    with RawConnection(port_of(gateway)) as conn:
        conn.send(webhook(first) + webhook(second))
        conn.sock.shutdown(socket.SHUT_WR)
        accepted(conn.response(), first)
        accepted(conn.response(), second)
        assert closed_by_server(conn)


def test_a_reset_mid_body_on_aiohttps_way_is_no_error(gateway: GatewayProcess) -> None:
    """A chunked webhook (aiohttp's way) whose client resets the connection mid-body:
    nothing stored, and no ERROR with a traceback in the log."""
    data = request_bytes(
        chunked(payload("Finished Journey", event_id=fresh("chunked-reset"))),
        headers=[("Transfer-Encoding", "chunked")],
        close=False,
    )
    before = event_count(db_of(gateway))
    client = socket.create_connection(("127.0.0.1", port_of(gateway)))
    client.sendall(data[: len(data) // 2])
    time.sleep(0.2)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    time.sleep(0.5)
    assert "Traceback" not in gateway.logs()
    assert event_count(db_of(gateway)) == before


# ------------------------------------------------------------------- a long pipeline
def test_a_long_pipeline_read_late_is_answered_in_order_and_stored(
    gateway: GatewayProcess,
) -> None:
    ids = [fresh("flood") for _ in range(1500)]
    with RawConnection(port_of(gateway), timeout=60) as conn:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sender = conn.sock.dup()  # send everything while nothing is read
        try:
            data = b"".join(webhook(i, close=(n == len(ids) - 1)) for n, i in enumerate(ids))
            sender.settimeout(60)
            sender.sendall(data)
            time.sleep(0.5)
            answers = [conn.response() for _ in ids]
        finally:
            sender.close()
    assert [a.json()["eventId"] if a else None for a in answers] == ids
    assert set(ids) <= stored_keys(db_of(gateway))


def flood(port: int, seconds: float) -> tuple[socket.socket, int, int]:
    """A client that pipelines 401s (answered without a store) for `seconds` and reads
    nothing: its socket, the bytes it got sent, and the bytes it had."""
    request = request_bytes(b"{}", auth=False, close=False)
    data = request * 300_000  # 22 MB, more than the kernel's buffers take
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
    client.connect(("127.0.0.1", port))
    client.setblocking(False)
    sent, deadline = 0, time.monotonic() + seconds
    while sent < len(data) and time.monotonic() < deadline:
        try:
            sent += client.send(data[sent : sent + 65536])
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            break
    return client, sent, len(data)


def test_a_client_that_sends_and_does_not_read_is_not_read_either(
    gateway: GatewayProcess,
) -> None:
    """Pipelined requests from a client that never reads its answers: once the answers
    back up, the gateway stops answering and reading that client (a client is read no
    faster than it is served), and serves others meanwhile."""
    before = len(gateway.logged("webhook refused"))
    client, sent, total = flood(port_of(gateway), 5)
    try:
        assert sent < total // 2, f"the gateway took {sent} bytes from a client reading none"
        # the kernel's buffers take a few MB of answers (growing them as they fill); then
        # nothing more is answered
        answered = [len(gateway.logged("webhook refused")) - before]
        deadline = time.monotonic() + 20
        while len(answered) < 3 or answered[-1] != answered[-3]:  # the same for 1 s
            assert time.monotonic() < deadline, f"answers kept coming: {answered}"
            time.sleep(0.5)
            answered.append(len(gateway.logged("webhook refused")) - before)
    finally:
        client.close()
    with RawConnection(port_of(gateway)) as conn:
        event_id = fresh("after-flood")
        conn.send(webhook(event_id, close=True))
        accepted(conn.response(), event_id)


def test_a_client_that_takes_no_answer_for_the_idle_timeout_is_cut_off(tmp_path: Path) -> None:
    gateway = GatewayProcess(
        write_config(tmp_path, base_config(tmp_path, server={"idle_timeout": "1s"}))
    ).start()
    try:
        client, _, _ = flood(port_of(gateway), 1)
        with client:
            client.settimeout(5)  # a connection left open fails here, not hangs
            time.sleep(4)  # answers back up within a moment, then 1 s without one taken
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                for _ in range(100):
                    client.send(b"x" * 65536)
    finally:
        gateway.stop()


# ------------------------------------------------------------ answers alike on both ways
@pytest.mark.parametrize(
    ("case", "body", "auth"),
    [
        ("unauthorized", payload("Finished Journey", event_id="alike-401"), False),
        ("invalid JSON", b'{"event": ', True),
        ("no event", b'{"body": {"eventId": "alike-none"}}', True),
        ("duplicate", payload("Finished Journey", event_id="alike-dup"), True),
    ],
)
def test_the_fast_paths_answers_are_aiohttps(
    gateway: GatewayProcess, case: str, body: bytes, auth: bool
) -> None:
    """The same request on the fast path and on aiohttp's way (a query string sends it
    there): the same status, headers (but Date) and body."""
    answers = []
    if case == "duplicate":
        with RawConnection(port_of(gateway)) as conn:
            conn.send(request_bytes(body))
            assert conn.response() is not None
    for target in ("/webhooks/idwise", "/webhooks/idwise?way=aiohttp"):
        with RawConnection(port_of(gateway)) as conn:
            conn.send(request_bytes(body, path=target, auth=auth, close=False))
            answer = conn.response()
            assert answer is not None
            answer.headers.pop("date")
            answers.append((answer.status, answer.headers, answer.body))
    assert answers[0] == answers[1]


# ----------------------------------------------------------------------------- shutdown
def test_shutdown_answers_the_request_in_flight_then_closes(tmp_path: Path) -> None:
    """SIGTERM while a webhook's body is still coming: its body is waited for within the
    grace period, the event stored and answered 200, and only then does the gateway exit."""
    gateway = GatewayProcess(write_config(tmp_path, base_config(tmp_path))).start()
    try:
        event_id = fresh("term")
        data = webhook(event_id)
        head_end = data.index(b"\r\n\r\n") + 4
        with RawConnection(port_of(gateway)) as busy, RawConnection(port_of(gateway)) as idle:
            idle.send(webhook(fresh("idle")))
            assert idle.response() is not None
            busy.send(data[:head_end])
            time.sleep(0.2)
            gateway.signal(signal.SIGTERM)
            assert closed_by_server(idle), "an idle keep-alive connection stayed open"
            time.sleep(0.3)
            busy.send(data[head_end:])
            answer = busy.response()
            accepted(answer, event_id)
            assert answer is not None and answer.headers["connection"] == "close"
        assert gateway.wait(20) == 0
        assert event_id in stored_keys(tmp_path / "gateway.db")
        wait_until(lambda: "stopped" in gateway.logs(), timeout=5)
    finally:
        gateway.stop()


def test_a_client_that_resets_while_its_webhook_commits_leaves_no_traceback(
    gateway: GatewayProcess,
) -> None:
    """A webhook and a health probe in one write, then a reset while the webhook commits:
    the probe must not be handed to aiohttp on a connection already closing (aiohttp's
    handler then failed with a traceback in the log)."""
    linger = struct.pack("ii", 1, 0)  # close() sends a reset
    for attempt in range(300):
        client = socket.create_connection(("127.0.0.1", port_of(gateway)))
        client.sendall(
            webhook(fresh("reset"))
            + request_bytes(None, method="GET", path="/healthz", auth=False, close=False)
        )
        time.sleep((attempt % 5) / 1000)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        client.close()
    time.sleep(0.5)
    logs = gateway.logs()
    assert "Traceback" not in logs and "exception was never retrieved" not in logs, logs[-3000:]


# ------------------------------------- answers left unread (in process, small kernel buffers)
@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[web.Application]:
    application = create_app(load_config(write_config(tmp_path, base_config(tmp_path))))
    runner = web.AppRunner(application)
    await runner.setup()
    try:
        yield application
    finally:
        await runner.cleanup()


async def small_buffered_connection(
    app: web.Application, idle_timeout: float
) -> tuple[FastPath, socket.socket]:
    """A fast-path connection over real TCP whose kernel buffers hold only a few KB each
    way, so the answers a client leaves unread soon wait in the transport's own buffer."""
    fast = FastPath.for_path(app, "/webhooks/idwise", idle_timeout)
    assert fast is not None
    listening = socket.create_server(("127.0.0.1", 0))
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(listening.getsockname())
    accepted_socket, _ = listening.accept()
    listening.close()
    accepted_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    handed: list[bytes] = []
    await asyncio.get_running_loop().connect_accepted_socket(
        lambda: fast.connection(handed.append), accepted_socket
    )
    return fast, client


@pytest.mark.parametrize("last", ["keep-alive", "close"])
async def test_a_connection_closed_with_answers_unread_is_cut_off(
    app: web.Application, last: str
) -> None:
    """100 answers the client never reads (under the transport's high-water mark, so
    writing is never paused), then the connection ends: by the idle timeout, or because
    the last request said `Connection: close`. A close waits for the answers to be sent,
    for ever without a deadline; the connection must be cut off instead."""
    fast, client = await small_buffered_connection(app, idle_timeout=0.5)
    with client:
        requests = [request_bytes(b"{}", auth=False, close=False)] * 99
        requests.append(request_bytes(b"{}", auth=False, close=(last == "close")))
        client.sendall(b"".join(requests))
        for _ in range(40):  # 4 s: the idle timeout, then as long again to take the answers
            await asyncio.sleep(0.1)
            if not fast.connections:
                break
        assert not fast.connections, "a connection whose client reads nothing stayed open"


async def test_a_client_that_reads_slowly_but_steadily_is_not_cut_off(
    app: web.Application,
) -> None:
    """The client takes its answers more slowly than the idle timeout would allow for all
    of them, but takes some all along: it is served to the end, not cut off."""
    _fast, client = await small_buffered_connection(app, idle_timeout=0.3)
    with client:
        client.sendall(request_bytes(b"{}", auth=False, close=False) * 400)
        client.setblocking(False)
        received = b""
        for _ in range(200):  # 4 KB every 0.05 s at most, 10 s in all
            await asyncio.sleep(0.05)
            try:
                chunk = client.recv(4096)
            except BlockingIOError:
                continue
            except ConnectionError:
                break
            if not chunk:
                break
            received += chunk
            if received.count(b"HTTP/1.1 401 ") == 400:
                break
        assert received.count(b"HTTP/1.1 401 ") == 400

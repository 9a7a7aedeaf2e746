"""The webhook listener's fast path (gateway.web.fast_path) in a real `idwise-gateway serve`
process, over raw sockets: keep-alive, the hand-over to aiohttp mid-connection, bodies that
come late or never, a client that does not read, shutdown with a request in flight, and
answers a client cannot tell from aiohttp's."""

from __future__ import annotations

import itertools
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.config import base_config, write_config
from tests.support.payloads import payload
from tests.support.process import GatewayProcess
from tests.support.raw_http import RawConnection, RawResponse, request_bytes
from tests.support.store import event_count, stored_keys
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow  # real gateway processes

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

"""Hostile requests against a real `idwise-gateway serve` process, over raw sockets.

Every hostile request gets a 4xx (or, where the request itself is broken at the HTTP
level, a closed connection), nothing is stored, and the gateway keeps serving: a valid
event posted right after is accepted. The corpus lives in tests/corpus (manifest.json
says what each file is and what the gateway must answer).
"""

from __future__ import annotations

import gzip
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.destinations.http import header_safe_key
from tests.support.config import base_config, write_config
from tests.support.payloads import corpus_body, corpus_manifest, payload
from tests.support.process import GatewayProcess, rss_kib
from tests.support.raw_http import RawConnection, chunked, exchange, request_bytes, send_large
from tests.support.sinks import Sink, SinkLoop
from tests.support.store import deliveries, event_count, stored_keys
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow  # real gateway processes

MAX_BODY = 1024 * 1024  # large enough that the 100k-level nesting files reach the parser
MANIFEST = corpus_manifest()
_ids = itertools.count()

KNOWN_BUGS: dict[str, str] = {}  # every bug this corpus found is fixed (see git log)


@dataclass
class Hostile:
    gateway: GatewayProcess
    sink: Sink
    db: Path

    @property
    def port(self) -> int:
        return int(self.gateway.config["server"]["port"])

    def alive(self, tag: str) -> None:
        """A valid event is accepted, promptly, and stored."""
        event_id = f"alive-{tag}-{next(_ids)}"
        started = time.monotonic()
        answer = exchange(self.port, request_bytes(payload("Finished Journey", event_id=event_id)))
        assert answer is not None, f"gateway did not answer a valid event after {tag}"
        assert answer.status == 200, (answer.status, answer.body[:300])
        assert answer.json() == {"status": "accepted", "eventId": event_id}
        assert time.monotonic() - started < 10
        assert self.gateway.process is not None and self.gateway.process.poll() is None


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    tmp = tmp_path_factory.mktemp("hostile")
    loop = SinkLoop()
    sink = loop.start()
    config = base_config(
        tmp,
        server={"max_body_bytes": MAX_BODY},
        destinations={
            "raw": {"type": "http", "url": sink.url_for("raw")},
            "templated": {
                "type": "http",
                "url": sink.url_for("templated"),
                "headers": {"X-Event": "{{ event }}", "X-Decision": "{{ body.finalDecision }}"},
                "body": {
                    "id": "{{ body.eventId }}",
                    "summary": "{{ event }}: {{ body.finalDecision }} ({{ body.referenceNo }})",
                    "steps": "{{ body.requiredSteps }}",
                    "journey": "{{ body.journeyId }}",
                },
            },
        },
        rules=[
            {
                "name": "odd-conditions",
                "when": "body.finalDecision == 'Rejected' || length(body.requiredSteps) > `0`"
                " || !body.systemDecision || body.journeyId > `5`",
                "to": ["raw"],
            },
            {"name": "big-scores", "when": "floor(body.score) > `100`", "to": ["raw"]},
            {"name": "everything", "to": ["raw", "templated"]},
        ],
    )
    gateway = GatewayProcess(write_config(tmp, config)).start()
    try:
        yield Hostile(gateway, sink, tmp / "gateway.db")
    finally:
        gateway.stop()
        loop.close()


# ------------------------------------------------------------------------------- corpus
def corpus_params() -> list[object]:
    params: list[object] = []
    for name in sorted(MANIFEST):
        marks = []
        if name in KNOWN_BUGS:
            marks.append(pytest.mark.xfail(reason=KNOWN_BUGS[name], strict=True))
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.mark.parametrize("name", corpus_params())
def test_corpus_body_is_refused_or_accepted_cleanly(hostile: Hostile, name: str) -> None:
    entry = MANIFEST[name]
    body = corpus_body(name)
    before = event_count(hostile.db)
    if len(body) > MAX_BODY:
        answer = send_large(hostile.port, request_bytes(body))
    else:
        answer = exchange(hostile.port, request_bytes(body))
    if entry["expect"] == "reject":
        if len(body) > MAX_BODY and answer is None:
            pass  # the server answered 413 and closed while we were still sending
        else:
            assert answer is not None, "connection closed without an answer"
            assert answer.status == entry.get("status", answer.status), answer.body[:300]
            assert 400 <= answer.status < 500, (answer.status, answer.body[:300])
            detail = answer.json()
            assert detail["status"] == "error"
            if "error" in entry:
                assert detail["error"] == entry["error"], detail
        assert event_count(hostile.db) == before, "a refused body was stored"
    else:
        # valid-but-odd JSON: accepting or refusing are both fine; a 5xx or no answer is not,
        # and an accepted event is stored exactly once and delivered to both destinations
        assert answer is not None, "connection closed without an answer"
        assert answer.status in (200, 400), (answer.status, answer.body[:300])
        if answer.status == 200:
            key = answer.json()["eventId"]
            assert key in stored_keys(hostile.db)
            assert event_count(hostile.db) == before + 1
            wait_until(
                lambda: (
                    {"raw", "templated"}
                    <= {
                        path
                        for path in ("raw", "templated")
                        if header_safe_key(key) in hostile.sink.delivered(path)
                        or _dead(hostile.db, key, path) is not None
                    }
                ),
                timeout=15,
                what=f"deliveries of {key[:40]!r} to finish",
            )
            dead = {p: _dead(hostile.db, key, p) for p in ("raw", "templated")}
            assert dead == {"raw": None, "templated": None}, f"accepted but dead: {dead}"
        else:
            assert event_count(hostile.db) == before
    hostile.alive(name)


def _dead(db: Path, key: str, destination: str) -> str | None:
    dead = [
        d for d in deliveries(db, status="dead", destination=destination) if d["dedupe_key"] == key
    ]
    return str(dead[0]["reason"]) if dead else None


# ------------------------------------------------------- nesting at the recursion limit
def test_nesting_near_the_recursion_limit_never_500s_without_event_id(hostile: Hostile) -> None:
    statuses = {}
    for depth in range(900, 1001):
        body = b'{"event":"Finished Journey","body":{"a":' + b"[" * depth + b"]" * depth + b"}}"
        answer = exchange(hostile.port, request_bytes(body))
        statuses[depth] = answer.status if answer else None
    bad = {d: s for d, s in statuses.items() if s not in (200, 400)}
    assert not bad, f"depths answered with neither 200 nor 400: {bad}"
    hostile.alive("near-limit-legacy")


def test_nesting_near_the_recursion_limit_with_event_id(hostile: Hostile) -> None:
    """With an eventId nothing re-serialises the payload: every depth is 200 or 400, and
    what is accepted is delivered (the engine parses the stored body again)."""
    accepted = []
    for depth in range(900, 1001, 4):
        event_id = f"deep-{depth}-{next(_ids)}"
        body = (
            b'{"event":"Finished Journey","body":{"eventId":"%s","a":' % event_id.encode()
            + b'{"a":' * depth
            + b"1"
            + b"}" * depth
            + b"}}"
        )
        answer = exchange(hostile.port, request_bytes(body))
        # far beyond any IDWise payload: refused up front, never a 500, never half-stored
        assert answer is not None and answer.status == 400, (depth, answer)
        assert event_id not in stored_keys(hostile.db)
    assert not accepted
    wait_until(
        lambda: set(accepted) <= set(hostile.sink.delivered("raw")),
        timeout=15,
        what="deeply nested accepted events to be delivered",
    )
    hostile.alive("near-limit")


# ------------------------------------------------------------------- encodings / bombs
def test_gzip_bomb_with_content_encoding_is_415(hostile: Hostile) -> None:
    bomb = gzip.compress(b"\0" * 64 * 1024 * 1024, compresslevel=9)  # ~64 KB -> 64 MB
    before = event_count(hostile.db)
    rss = rss_kib(hostile.gateway.process.pid)  # type: ignore[union-attr]
    for encoding in ("gzip", "GZIP", " gzip ", "deflate", "x-gzip", "gzip, gzip", "compress"):
        answer = exchange(
            hostile.port, request_bytes(bomb, headers=[("Content-Encoding", encoding)])
        )
        assert answer is not None and answer.status == 415, (encoding, answer)
        assert answer.json()["error"] == "unsupported_encoding"
    for encoding in ("br", "zstd"):  # aiohttp's parser may refuse these first (400)
        answer = exchange(
            hostile.port, request_bytes(bomb, headers=[("Content-Encoding", encoding)])
        )
        assert answer is not None and answer.status in (400, 415), (encoding, answer)
    assert event_count(hostile.db) == before
    assert rss_kib(hostile.gateway.process.pid) - rss < 50 * 1024  # type: ignore[union-attr]
    hostile.alive("gzip-bomb")


def test_compressed_transfer_encoding_is_not_decoded(hostile: Hostile) -> None:
    document = gzip.compress(payload("Finished Journey", event_id="te-gzip"))
    answer = exchange(
        hostile.port,
        request_bytes(chunked(document), headers=[("Transfer-Encoding", "gzip, chunked")]),
    )
    assert answer is None or 400 <= answer.status < 500, answer
    assert "te-gzip" not in stored_keys(hostile.db)
    hostile.alive("transfer-encoding")


def test_duplicate_content_encoding_headers_cannot_smuggle_a_compressed_body(
    hostile: Hostile,
) -> None:
    """Found by this suite: the 415 check read only the first Content-Encoding header while
    aiohttp inflated by the last, so `identity` + `gzip` got a gzip body accepted (200)."""
    compressed = gzip.compress(payload("Finished Journey", event_id="smuggled-gzip"))
    answer = exchange(
        hostile.port,
        request_bytes(
            compressed, headers=[("Content-Encoding", "identity"), ("Content-Encoding", "gzip")]
        ),
    )
    assert answer is not None
    assert answer.status == 415, (answer.status, answer.body[:200])
    assert "smuggled-gzip" not in stored_keys(hostile.db)


def test_smuggled_gzip_bomb_stays_bounded(hostile: Hostile) -> None:
    """Whatever the 415 check misses, an inflated body still counts against the limit."""
    bomb = gzip.compress(b"[" * 200 * 1024 * 1024, compresslevel=9)
    assert len(bomb) < MAX_BODY
    pid = hostile.gateway.process.pid  # type: ignore[union-attr]
    rss = rss_kib(pid)
    started = time.monotonic()
    answer = send_large(
        hostile.port,
        request_bytes(
            bomb, headers=[("Content-Encoding", "identity"), ("Content-Encoding", "gzip")]
        ),
    )
    assert answer is None or 400 <= answer.status < 500, answer  # 415, 413 or 400
    assert time.monotonic() - started < 20
    assert rss_kib(pid) - rss < 50 * 1024
    hostile.alive("smuggled-bomb")


# --------------------------------------------------------------------- header floods
@pytest.mark.parametrize(
    ("label", "headers", "auth"),
    [
        ("200 headers", [(f"X-Flood-{i}", "x" * 20) for i in range(200)], True),
        ("10000 headers", [(f"X-F{i}", "y") for i in range(10_000)], True),
        ("one 64 KB header", [("X-Big", "z" * 65536)], True),
        ("64 KB Authorization", [("Authorization", "Bearer " + "t" * 65536)], False),
        ("64 KB X-Forwarded-For", [("X-Forwarded-For", ", ".join(["10.0.0.1"] * 6000))], True),
        ("header without colon", [("NoColonHere", "")], True),
    ],
)
def test_header_flood_is_refused_and_the_gateway_survives(
    hostile: Hostile, label: str, headers: list[tuple[str, str]], auth: bool
) -> None:
    before = event_count(hostile.db)
    raw = request_bytes(payload("Finished Journey", event_id=f"flood-{label}"), auth=auth)
    head, _, body = raw.partition(b"\r\n\r\n")
    extra = "".join(f"\r\n{n}: {v}" if v or n != "NoColonHere" else f"\r\n{n}" for n, v in headers)
    answer = send_large(hostile.port, head + extra.encode() + b"\r\n\r\n" + body)
    assert answer is None or 400 <= answer.status < 500, (label, answer)
    assert event_count(hostile.db) == before
    hostile.alive(label)


def test_huge_request_line_and_path(hostile: Hostile) -> None:
    answer = exchange(
        hostile.port,
        request_bytes(b"{}", path="/webhooks/idwise?" + "q" * 70_000),
    )
    assert answer is None or 400 <= answer.status < 500, answer
    answer = exchange(hostile.port, b"GARBAGE\r\n\r\n")
    assert answer is None or 400 <= answer.status < 500, answer
    answer = exchange(hostile.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 500)
    assert answer is None or 400 <= answer.status < 500, answer  # a TLS ClientHello
    hostile.alive("request-line")


# ------------------------------------------------------------------------ slow clients
def test_slow_body_is_cut_off_while_others_are_served(hostile: Hostile) -> None:
    """Slowloris on the body: 10 clients announce a body and trickle it (1 byte / 0.4 s, so
    under 30 bytes within the 10 s body timeout). Each gets a 408 or is closed, nothing is
    stored, and valid requests meanwhile are answered promptly."""
    body = payload("Finished Journey", event_id="slow-body")
    results: list[object] = []

    def slow_client() -> None:
        with RawConnection(hostile.port, timeout=25) as conn:
            conn.send(request_bytes(None, length=len(body)))
            started = time.monotonic()
            for byte in body:
                if not conn.send(bytes([byte])) or time.monotonic() - started > 16:
                    break
                conn.sock.settimeout(0.4)
                try:  # an answer arrives while we are still trickling
                    chunk = conn.sock.recv(65536)
                except TimeoutError:
                    continue
                conn.sock.settimeout(25)
                if not chunk:
                    break
                conn.buffer += chunk
                break
            conn.sock.settimeout(25)
            try:
                answer = conn.response()
            except TimeoutError:
                answer = None
            results.append((answer, time.monotonic() - started))

    clients = [threading.Thread(target=slow_client, daemon=True) for _ in range(10)]
    for client in clients:
        client.start()
    latencies = []
    started = time.monotonic()
    while time.monotonic() - started < 8:  # during the trickle
        t0 = time.monotonic()
        hostile.alive("during-slowloris")
        latencies.append(time.monotonic() - t0)
        time.sleep(0.2)
    for client in clients:
        client.join(30)
    assert len(results) == 10
    for answer, elapsed in results:  # type: ignore[misc]
        assert answer is None or answer.status == 408, answer
        if answer is not None:
            assert answer.json()["error"] == "body_timeout"
        assert elapsed < 20, elapsed
    assert "slow-body" not in stored_keys(hostile.db)
    assert max(latencies) < 3, f"valid requests waited behind slow clients: {max(latencies):.2f}s"


def test_slow_headers_do_not_block_other_clients(hostile: Hostile) -> None:
    """100 connections that never finish their headers; valid requests still go through."""
    conns = []
    try:
        for i in range(100):
            conn = RawConnection(hostile.port, timeout=10)
            conn.send(b"POST /webhooks/idwise HTTP/1.1\r\nHost: x\r\nX-Slow-%d: " % i)
            conns.append(conn)
        for _ in range(5):
            t0 = time.monotonic()
            hostile.alive("slow-headers")
            assert time.monotonic() - t0 < 3
    finally:
        for conn in conns:
            conn.close()


# ---------------------------------------------------------------------- body limits
def test_chunked_body_over_the_limit_is_413(hostile: Hostile) -> None:
    before = event_count(hostile.db)
    padded = json.loads(payload("Finished Journey", event_id="chunked-big"))
    padded["body"]["pad"] = "p" * (MAX_BODY + 10)
    data = chunked(json.dumps(padded).encode(), size=8192)
    answer = send_large(
        hostile.port, request_bytes(data, headers=[("Transfer-Encoding", "chunked")])
    )
    assert answer is not None and answer.status == 413, answer
    assert answer.json()["error"] == "too_large"
    assert event_count(hostile.db) == before
    hostile.alive("chunked-413")


def test_content_length_over_the_limit_is_413_without_reading_the_body(
    hostile: Hostile,
) -> None:
    for length in (MAX_BODY + 1, 10 * 1024 * 1024, 10**15):
        with RawConnection(hostile.port, timeout=10) as conn:
            t0 = time.monotonic()
            conn.send(request_bytes(None, length=length))  # headers only; no body follows
            answer = conn.response()
            assert answer is not None and answer.status == 413, (length, answer)
            assert time.monotonic() - t0 < 5
    hostile.alive("content-length-413")


def test_body_shorter_than_content_length_times_out_or_closes(hostile: Hostile) -> None:
    """The client announces 1000 bytes, sends 10 and half-closes: no hang, nothing stored."""
    before = event_count(hostile.db)
    with RawConnection(hostile.port, timeout=15) as conn:
        conn.send(request_bytes(b'{"event":"', length=1000))
        conn.sock.shutdown(socket.SHUT_WR)
        answer = conn.response()
    assert answer is None or 400 <= answer.status < 500, answer
    assert event_count(hostile.db) == before
    hostile.alive("short-body")


# ------------------------------------------------------------------------- pipelining
def test_pipelined_requests_are_answered_in_order(hostile: Hostile) -> None:
    ids = [f"pipe-{next(_ids)}" for _ in range(3)]
    requests = [
        request_bytes(payload("Finished Journey", event_id=ids[0]), close=False),
        request_bytes(b'{"event": "Finished Journey", "body": [', close=False),
        request_bytes(payload("Finished Step", event_id=ids[1]), close=False),
        request_bytes(b"{}", headers=[("Content-Encoding", "gzip")], close=False),
        request_bytes(None, method="GET", path="/healthz", auth=False, close=False),
        request_bytes(payload("Finished Journey", event_id=ids[2]), close=True),
    ]
    with RawConnection(hostile.port, timeout=15) as conn:
        conn.send(b"".join(requests))
        answers = [conn.response() for _ in requests]
    statuses = [a.status if a else None for a in answers]
    assert statuses[:3] == [200, 400, 200], statuses
    # after a 415 whose body was never read the server may close; it must never misparse
    assert statuses[3] == 415, statuses
    assert statuses[4:] in ([200, 200], [None, None]), statuses
    stored = stored_keys(hostile.db)
    assert {ids[0], ids[1]} <= stored
    assert (ids[2] in stored) == (statuses[5] == 200)


def test_fifty_pipelined_events_on_one_connection(hostile: Hostile) -> None:
    ids = [f"pipe50-{next(_ids)}" for _ in range(50)]
    data = b"".join(
        request_bytes(payload("Finished Step", event_id=i), close=(n == 49))
        for n, i in enumerate(ids)
    )
    with RawConnection(hostile.port, timeout=20) as conn:
        conn.send(data)
        answers = [conn.response() for _ in ids]
    assert [a.json()["eventId"] if a else None for a in answers] == ids
    assert set(ids) <= stored_keys(hostile.db)


# -------------------------------------------------------------------------- memory
def test_memory_stays_bounded_under_200_hostile_requests(hostile: Hostile) -> None:
    pid = hostile.gateway.process.pid  # type: ignore[union-attr]
    small = [
        n
        for n, e in sorted(MANIFEST.items())
        if e["expect"] == "reject" and "generate" not in n and n not in KNOWN_BUGS
    ]
    big = corpus_body("big_10mb.json")
    bomb = gzip.compress(b"\0" * 16 * 1024 * 1024)

    def one(i: int) -> None:
        kind = i % 10
        if kind == 0:  # 10 MB announced and sent
            send_large(hostile.port, request_bytes(big))
        elif kind == 1:  # 10 MB chunked: read up to the limit, then 413
            send_large(
                hostile.port,
                request_bytes(chunked(big), headers=[("Transfer-Encoding", "chunked")]),
            )
        elif kind == 2:
            exchange(hostile.port, request_bytes(bomb, headers=[("Content-Encoding", "gzip")]))
        elif kind == 3:
            send_large(
                hostile.port,
                request_bytes(b"{}", headers=[(f"X-H{j}", "v" * 8000) for j in range(100)]),
            )
        else:
            exchange(hostile.port, request_bytes(corpus_body(small[i % len(small)])))

    for i in range(20):  # warm up: let every code path allocate what it keeps
        one(i)
    hostile.alive("memory-warm")
    before = rss_kib(pid)
    threads: list[threading.Thread] = []
    for i in range(200):
        thread = threading.Thread(target=one, args=(i,), daemon=True)
        thread.start()
        threads.append(thread)
        if len(threads) >= 4:  # four hostile clients at a time
            threads.pop(0).join(60)
    for thread in threads:
        thread.join(60)
    hostile.alive("memory")
    after = rss_kib(pid)
    print(f"gateway RSS {before / 1024:.1f} MB -> {after / 1024:.1f} MB")
    assert after - before < 50 * 1024, f"RSS grew {(after - before) / 1024:.1f} MB"

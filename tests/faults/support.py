"""Shared machinery for the fault tests: raw HTTP over sockets, sinks on a background loop,
a threaded load generator and /proc readings. Real sockets and processes only; no mocks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway import idwise
from tests.helpers import TOKEN, Received, Sink, post, sqlite_rows

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


# ------------------------------------------------------------------------------ payloads
def event_bytes(event_type: str, event_id: str, **body: Any) -> bytes:
    document = idwise.sample(event_type)
    document["body"].update(eventId=event_id, **body)
    return json.dumps(document).encode()


def corpus_manifest() -> dict[str, dict[str, Any]]:
    manifest: dict[str, dict[str, Any]] = json.loads((CORPUS / "manifest.json").read_text())
    return manifest


def corpus_body(name: str) -> bytes:
    entry = corpus_manifest()[name]
    recipe = entry.get("generate")
    if recipe is None:
        return (CORPUS / name).read_bytes()
    prefix, suffix = recipe["prefix"].encode(), recipe["suffix"].encode()
    fill = recipe["fill"].encode() * (recipe["size"] - len(prefix) - len(suffix))
    return prefix + fill + suffix


# ------------------------------------------------------------------------ raw HTTP/1.1
@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request_bytes(
    body: bytes | None = None,
    *,
    method: str = "POST",
    path: str = "/webhooks/idwise",
    headers: Iterable[tuple[str, str]] = (),
    auth: bool = True,
    close: bool = True,
    length: int | None = None,
) -> bytes:
    """One HTTP/1.1 request. `length` overrides Content-Length; body None sends no body."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if auth:
        lines.append(f"Authorization: Bearer {TOKEN}")
    if close:
        lines.append("Connection: close")
    extra = list(headers)
    names = {name.lower() for name, _ in extra}
    framed = "content-length" in names or "transfer-encoding" in names
    if not framed and (length is not None or body is not None):
        lines.append(f"Content-Length: {length if length is not None else len(body or b'')}")
    lines += [f"{name}: {value}" for name, value in extra]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (body or b"")


def chunked(body: bytes, size: int = 65536) -> bytes:
    out = bytearray()
    for start in range(0, len(body), size):
        piece = body[start : start + size]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return bytes(out + b"0\r\n\r\n")


class RawConnection:
    """A client socket that can send anything and parse the responses that come back."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        self.closed = False

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> bool:
        """False when the server has closed or reset the connection meanwhile."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:  # BrokenPipe, ConnectionReset, timeout
            return False

    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(262144)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buffer += chunk
        return True

    def _read_until(self, marker: bytes) -> bytes | None:
        while marker not in self.buffer:
            if not self._fill():
                return None
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _read_exact(self, count: int) -> bytes | None:
        while len(self.buffer) < count:
            if not self._fill():
                return None
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def response(self) -> RawResponse | None:
        """The next response; None if the connection closed before a complete one."""
        head = self._read_until(b"\r\n\r\n")
        if head is None:
            return None
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise AssertionError(f"not an HTTP response: {head[:200]!r}")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size_line = self._read_until(b"\r\n")
                if size_line is None:
                    return None
                size = int(size_line.split(b";")[0], 16)
                piece = self._read_exact(size + 2)
                if piece is None:
                    return None
                if size == 0:
                    break
                body += piece[:-2]
        elif "content-length" in headers:
            data = self._read_exact(int(headers["content-length"]))
            if data is None:
                return None
            body = data
        else:
            while self._fill():
                pass
            body, self.buffer = self.buffer, b""
        return RawResponse(int(parts[1]), headers, body)


def exchange(port: int, data: bytes, timeout: float = 15.0) -> RawResponse | None:
    """Send one request (all at once) and read its response; None = closed without one."""
    with RawConnection(port, timeout) as conn:
        conn.send(data)
        try:
            return conn.response()
        except TimeoutError:
            return None


def send_large(port: int, data: bytes, timeout: float = 30.0) -> RawResponse | None:
    """Send a big request from a second thread while reading, so neither side can block
    the other: the server may answer (413) before it has read the body."""
    with RawConnection(port, timeout) as conn:
        sender = threading.Thread(target=conn.send, args=(data,), daemon=True)
        sender.start()
        try:
            answer = conn.response()
        except TimeoutError:
            answer = None
        conn.close()
        sender.join(timeout)
        return answer


# ---------------------------------------------------------------- sinks on a loop thread
@dataclass
class RecordingSink(Sink):
    """`Sink` that also records the status it answered each request with."""

    answered: list[tuple[Received, int]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        received = Received(request.path, dict(request.headers), body, time.time())
        self.received.append(received)
        self.arrived.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = self.responses.pop(0) if self.responses else self.default
        status = answer if isinstance(answer, int) else answer[0]
        self.answered.append((received, status))
        if isinstance(answer, int):
            return web.Response(status=answer, text="ok" if answer < 300 else "error")
        return web.Response(status=status, headers=answer[1], text=answer[2])

    def url_for(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def delivered(self, path: str) -> list[str]:
        """Idempotency keys answered 2xx on `path`, in the order they arrived."""
        return [
            r.headers.get("Idempotency-Key", "")
            for r, status in list(self.answered)
            if r.path == "/" + path.lstrip("/") and 200 <= status < 300
        ]

    def attempts(self, path: str) -> list[Received]:
        return [r for r in list(self.received) if r.path == "/" + path.lstrip("/")]


class SinkLoop:
    """An asyncio loop in a daemon thread that hosts sinks for synchronous tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sinks", daemon=True)
        self.thread.start()
        self.sinks: list[RecordingSink] = []

    def run(self, coroutine: Any, timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self, **kwargs: Any) -> RecordingSink:
        sink = RecordingSink(**kwargs)
        self.run(sink.start())
        self.sinks.append(sink)
        return sink

    def stop_sink(self, sink: RecordingSink) -> None:
        self.run(sink.stop())
        self.sinks.remove(sink)

    def close(self) -> None:
        for sink in list(self.sinks):
            with contextlib.suppress(Exception):
                self.stop_sink(sink)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


# -------------------------------------------------------------------------- load generator
@dataclass(frozen=True)
class Outcome:
    event_id: str
    event_type: str
    status: int | None  # None: no HTTP answer (refused, reset, timeout)
    answer: str  # "accepted", "duplicate", an error code, or the client exception's name
    sent_at: float
    done_at: float


class Load:
    """Worker threads posting events with unique eventIds until stopped.

    `choose(worker, n)` returns (event_type, event_id, extra body fields) for a worker's n-th
    request. Every request's outcome is kept, including requests that got no answer."""

    def __init__(
        self,
        url: str,
        choose: Callable[[int, int], tuple[str, str, dict[str, Any]]],
        workers: int = 4,
        timeout: float = 15.0,
        pause: float = 0.0,
    ) -> None:
        self.url = url
        self.choose = choose
        self.timeout = timeout
        self.pause = pause
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(w,), name=f"load-{w}", daemon=True)
            for w in range(workers)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def _run(self, worker: int) -> None:
        n = 0
        while not self._stop.is_set():
            event_type, event_id, extra = self.choose(worker, n)
            n += 1
            body = event_bytes(event_type, event_id, **extra)
            started = time.monotonic()
            try:
                status, answer = post(self.url, body, timeout=self.timeout)
                text = str(answer.get("status") if status == 200 else answer.get("error"))
            except Exception as exc:  # refused, reset, timeout, incomplete read: no answer
                status, text = None, type(exc).__name__
            self.outcomes.append(
                Outcome(event_id, event_type, status, text, started, time.monotonic())
            )
            if status is None or self.pause:
                time.sleep(self.pause or 0.02)  # the gateway is down: do not spin

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        start = len(self.outcomes)
        while len(self.outcomes) - start < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"load made {len(self.outcomes) - start} of {count} requests")
            time.sleep(0.01)

    def accepted(self) -> set[str]:
        return {o.event_id for o in self.outcomes if o.status == 200}

    def statuses(self) -> dict[Any, int]:
        counts: dict[Any, int] = {}
        for o in self.outcomes:
            key = o.status if o.status is not None else o.answer
            counts[key] = counts.get(key, 0) + 1
        return counts


# ----------------------------------------------------------------------------- the store
def stored_keys(db: Path) -> set[str]:
    return {row[0] for row in sqlite_rows(db, "SELECT dedupe_key FROM events")}


def event_count(db: Path) -> int:
    return int(sqlite_rows(db, "SELECT count(*) FROM events")[0][0])


def routes(db: Path) -> dict[str, set[str]]:
    """dedupe key -> destinations its rules chose (one delivery row each)."""
    chosen: dict[str, set[str]] = {}
    for key, destination in sqlite_rows(
        db,
        "SELECT e.dedupe_key, d.destination FROM deliveries d JOIN events e ON e.id = d.event_row",
    ):
        chosen.setdefault(key, set()).add(destination)
    return chosen


# ------------------------------------------------------------------------------- /proc
def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.M)
    assert match, status
    return int(match.group(1))


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")

"""HTTP/1.1 over raw sockets, for requests no well-behaved client would send (bad framing,
trickled bytes, huge bodies), and `SilentServer`, a TCP peer that never answers. Does
network I/O."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Self

from tests.support.config import TOKEN


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


class RawPeer:
    """A TCP server on 127.0.0.1 (TLS with `tls`) whose connections a subclass's `_handle`
    serves; `stop` closes every connection it took as well as the server."""

    def __init__(self, tls: Any = None) -> None:
        self.tls = tls
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        await self._handle(reader, writer)

    async def start(self) -> Self:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1)


class SilentServer(RawPeer):
    """A TCP server on 127.0.0.1 that never answers. With `hang_up`, it reads one request
    head (up to a blank line) and closes the connection without a word, like a receiver
    that crashes mid-request; `requests` counts those heads."""

    def __init__(self, hang_up: bool = False) -> None:
        super().__init__()
        self.hang_up = hang_up
        self.connections = 0
        self.requests = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(Exception):
            if self.hang_up:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                writer.close()
                return
            await reader.read()


class StaleKeepAlivePeer(RawPeer):
    """Answers the first request of each connection (200, kept alive), then closes that
    connection without a word when the next request arrives on it: the race of a receiver
    closing an idle keep-alive connection just as the gateway reuses it. `requests` holds
    the Idempotency-Key of every request received, per connection."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[list[str]] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen: list[str] = []
        self.requests.append(seen)
        with contextlib.suppress(Exception):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                fields = dict(
                    line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line
                )
                await reader.readexactly(int(fields.get("Content-Length", "0")))
                seen.append(fields.get("Idempotency-Key", ""))
                if len(seen) > 1:
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()


@dataclass
class ScriptedRequest:
    connection: int  # which connection it came on, counted from 0
    head: str  # request line and headers, as sent
    body: bytes

    def header(self, name: str) -> str | None:
        for line in self.head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


class ScriptedPeer(RawPeer):
    """An HTTP/1.1 peer that answers each request with raw bytes from `answer(request)`:
    framings, interim answers and malformed replies no library server would send. An
    answer of None closes the connection without a word; `close_after`, or an answer given
    as (bytes, True), closes it after the answer; (bytes, "reset") resets it after the
    answer (SO_LINGER 0: an RST, as a peer that closes with unread request bytes sends);
    (bytes, seconds) waits that long, then sends what follows in the next answer.
    Records every request with the connection it came on; `eofs` counts the connections
    the client closed."""

    def __init__(
        self,
        answer: Any = None,
        close_after: bool = False,
        tls: Any = None,
    ) -> None:
        super().__init__(tls)
        self.answer = answer or (lambda request: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.close_after = close_after
        self.connections = 0
        self.eofs = 0
        self.requests: list[ScriptedRequest] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        with contextlib.suppress(Exception):
            while True:
                try:
                    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                except asyncio.IncompleteReadError as exc:
                    if not exc.partial:
                        self.eofs += 1
                    break
                request = ScriptedRequest(number, head, b"")
                length = request.header("Content-Length")
                request.body = await reader.readexactly(int(length or 0))
                self.requests.append(request)
                reply = self.answer(request)
                if reply is None:
                    break
                close: Any = self.close_after
                if isinstance(reply, tuple):
                    reply, close = reply
                writer.write(reply)
                await writer.drain()
                if close == "reset":
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                if isinstance(close, float):
                    await asyncio.sleep(close)
                    continue
                if close:
                    break
        writer.close()

    def url(self, path: str = "/hook", scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

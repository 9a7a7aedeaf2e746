"""The outbound HTTP client of the HTTP and Slack destinations: a pool of keep-alive
connections per destination, and the one exchange they all go through. Does network I/O;
the bytes on the wire are destinations/http1.py's.

Resending once: a request that went out on a keep-alive connection the peer closed before
a single byte of answer (the race of a receiver closing an idle connection just as it is
reused) is sent again at once on a fresh connection, a single time. That is the rule of
Go's http.Transport for requests that carry an Idempotency-Key, as every delivery does: the
receiver most likely never saw it, and if it did, the key tells it so. Any other drop is an
ordinary failure of the attempt (on a fresh connection the request may well have arrived).

An exchange that fails, times out or is cancelled closes its connection: what the peer
will send on it next is unknown.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping

from gateway.destinations.http1 import (
    BadResponse,
    ConnectFailed,
    ConnectionDropped,
    Reply,
    ResponseParser,
    Target,
    encode_request,
    parse_target,
)

#: exchanges in flight at once in the client not tied to a lane (a destination's client
#: needs no bound of its own: its lane's workers, at most 256, are one)
MAX_CONNECTIONS = 256
#: an idle connection older than this is closed, not reused (as aiohttp's default): a
#: receiver closing idle connections sooner costs at most one resend
KEEPALIVE = 15.0
#: of an answer's body, the part kept for the attempt record
KEPT_REPLY = 4096
#: how long `close` waits for its connections to be closed
CLOSE_WAIT = 2.0


class ClientClosed(RuntimeError):
    """An exchange asked of a client after `close`."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection, carrying one exchange at a time."""

    __slots__ = ("closed", "idle_since", "lost", "origin", "parser", "transport", "waiter")

    def __init__(self) -> None:
        self.closed = asyncio.get_running_loop().create_future()
        self.origin: tuple[bool, str, int] = (False, "", 0)
        self.transport: asyncio.Transport | None = None
        self.parser: ResponseParser | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.idle_since = 0.0
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def usable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def send(self, request: bytes, parser: ResponseParser) -> asyncio.Future[None]:
        assert self.transport is not None
        self.parser = parser
        self.waiter = waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return waiter

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:  # bytes nobody asked for: the stream is out of step
            self.close()
            return
        try:
            finished = parser.feed(data)
        except BadResponse as exc:
            self._settle(exc)
            self.close()
            return
        if finished:
            self._settle(None)

    def eof_received(self) -> bool:
        parser = self.parser
        if parser is not None:
            self._settle(None if parser.feed_eof() else ConnectionDropped(parser.received))
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.closed.done():
            self.closed.set_result(None)
        parser = self.parser
        if parser is not None:
            self._settle(ConnectionDropped(parser.received))

    def _settle(self, error: Exception | None) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class HttpClient:
    """Keep-alive connections per origin (a destination has one), reused most recently
    used first; idle ones expire after KEEPALIVE."""

    def __init__(self, limit: int | None = MAX_CONNECTIONS, keepalive: float = KEEPALIVE) -> None:
        self._gate = asyncio.Semaphore(limit) if limit else None
        self._keepalive = keepalive
        self._idle: dict[tuple[bool, str, int], list[_Connection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._busy: set[_Connection] = set()
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    async def exchange(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        timeout: float,  # noqa: ASYNC109 - the exchange's own deadline, connect included
    ) -> Reply:
        """One request, its answer's status, headers and first `KEPT_REPLY` bytes; sent once
        more only when the first try met a stale keep-alive connection. Raises InvalidTarget,
        InvalidHeader, ConnectFailed, ConnectionDropped, BadResponse, TimeoutError."""
        if self._closed:
            raise ClientClosed("the HTTP client is closed")
        target = parse_target(url)
        request = encode_request(method, target, headers, body)
        deadline = asyncio.get_running_loop().time() + timeout
        if self._gate is None:
            return await self._exchange(target, request, method == "HEAD", deadline)
        async with asyncio.timeout_at(deadline), self._gate:
            return await self._exchange(target, request, method == "HEAD", deadline)

    async def _exchange(
        self, target: Target, request: bytes, head_only: bool, deadline: float
    ) -> Reply:
        connection = self._reuse(target)
        if connection is not None:
            try:
                return await self._send(connection, request, head_only, deadline)
            except ConnectionDropped as exc:
                if exc.received or self._closed:
                    raise
        connection = await self._connect(target, deadline)
        return await self._send(connection, request, head_only, deadline)

    async def _send(
        self, connection: _Connection, request: bytes, head_only: bool, deadline: float
    ) -> Reply:
        parser = ResponseParser(KEPT_REPLY, head_only)
        self._busy.add(connection)
        waiter = connection.send(request, parser)
        # a timer on the answer rather than asyncio.timeout: a third of the cost, and the
        # exchange runs for every delivery
        timer = asyncio.get_running_loop().call_at(deadline, _expire, waiter)
        try:
            await waiter
        except BaseException:
            connection.abort()
            raise
        finally:
            timer.cancel()
            self._busy.discard(connection)
        connection.parser = None
        connection.waiter = None
        if parser.reusable and connection.usable() and not self._closed:
            self._release(connection)
        else:
            connection.close()
        return Reply(parser.status, parser.headers, parser.body)

    def _reuse(self, target: Target) -> _Connection | None:
        idle = self._idle.get(target.origin)
        if not idle:
            return None
        oldest = asyncio.get_running_loop().time() - self._keepalive
        while idle:
            connection = idle.pop()
            if connection.usable() and connection.idle_since > oldest:
                return connection
            connection.close()
        return None

    async def _connect(self, target: Target, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                if target.tls:
                    _, connection = await loop.create_connection(
                        _Connection,
                        target.host,
                        target.port,
                        ssl=self._tls_context(),
                        server_hostname=target.host,
                    )
                else:
                    _, connection = await loop.create_connection(
                        _Connection, target.host, target.port
                    )
        except TimeoutError:  # an OSError too, but the deadline's, not the peer's
            raise
        except OSError as exc:  # refused, unreachable, unknown host, TLS (ssl.SSLError)
            raise ConnectFailed(exc) from exc
        connection.origin = target.origin
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        # made at the first https destination, not at start: loading the CA store takes time
        if self._tls is None:
            self._tls = ssl.create_default_context()
            self._tls.set_alpn_protocols(["http/1.1"])
        return self._tls

    def _release(self, connection: _Connection) -> None:
        loop = asyncio.get_running_loop()
        connection.idle_since = loop.time()
        self._idle.setdefault(connection.origin, []).append(connection)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._keepalive, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle for KEEPALIVE; come back while any are left."""
        self._sweeper = None
        oldest = asyncio.get_running_loop().time() - self._keepalive
        for origin, idle in list(self._idle.items()):
            kept = [c for c in idle if c.usable() and c.idle_since > oldest]
            for connection in idle:
                if connection not in kept:
                    connection.close()
            if kept:
                self._idle[origin] = kept
            else:
                del self._idle[origin]
        if self._idle:
            self._sweeper = asyncio.get_running_loop().call_later(self._keepalive, self._sweep)

    async def close(self) -> None:
        """Close every connection (an exchange still in flight fails) and wait, briefly,
        until they are closed."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        connections = [c for idle in self._idle.values() for c in idle] + list(self._busy)
        self._idle.clear()
        for connection in connections:
            connection.close()
        if connections:
            await asyncio.wait([c.closed for c in connections], timeout=CLOSE_WAIT)

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class DestinationClients:
    """One client, so one pool of keep-alive connections, per destination: a destination
    that is slow to answer holds only its own connections, never the ones another
    destination on the same host needs. The lane's concurrency bounds each pool. A
    destination's client is made at its first attempt and kept until shutdown (a reload
    that removes the destination leaves idle connections that expire after KEEPALIVE).
    `default` serves everything that is not a lane's attempt (the console's test events)."""

    def __init__(self) -> None:
        self.default = HttpClient()
        self._by_destination: dict[str, HttpClient] = {}

    def get(self, destination: str) -> HttpClient:
        client = self._by_destination.get(destination)
        if client is None:
            client = self._by_destination[destination] = HttpClient(limit=None)
        return client

    async def close(self) -> None:
        for client in (*self._by_destination.values(), self.default):
            await client.close()
        self._by_destination.clear()

    async def __aenter__(self) -> DestinationClients:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

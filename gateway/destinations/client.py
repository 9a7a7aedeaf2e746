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
import functools
import os
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

#: an idle connection older than this is closed, not reused (as aiohttp's default): a
#: receiver closing idle connections sooner costs at most one resend
KEEPALIVE = 15.0
#: of an answer's body, the part kept for the attempt record
KEPT_REPLY = 4096
#: how long `close` waits for its connections to be closed
CLOSE_WAIT = 2.0


def tls_context() -> ssl.SSLContext:
    """One context for every https destination: loading the CA store blocks the loop for
    tens of milliseconds, so it happens once (per value of SSL_CERT_FILE and SSL_CERT_DIR,
    which point at a private CA's bundle)."""
    return _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()  # reads both variables
    context.set_alpn_protocols(["http/1.1"])
    return context


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
        """Open, and nothing of the last request still unsent (a peer that answered before
        reading all of it may not read the rest as a request of its own)."""
        transport = self.transport
        return (
            not self.lost
            and transport is not None
            and not transport.is_closing()
            and not transport.get_write_buffer_size()
        )

    def fresh(self, oldest: float) -> bool:
        """Fit to carry the next request: usable, and idle since after `oldest`."""
        return self.idle_since > oldest and self.usable()

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
        except Exception as exc:  # BadResponse, or anything the parser did not foresee
            problem = exc if isinstance(exc, BadResponse) else BadResponse(type(exc).__name__)
            self._settle(problem)
            self.close()
            return
        if finished:
            self._settle(None)

    def eof_received(self) -> bool:
        self._end()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.closed.done():
            self.closed.set_result(None)
        self._end()  # a reset right after an answer framed by the close still ends it

    def expire(self) -> None:
        """The deadline: an answer whose head has arrived counts (what is left of its body is
        not waited for); without one, the exchange timed out."""
        parser = self.parser
        if parser is not None and parser.end():
            self._settle(None)
        else:
            self._settle(TimeoutError())

    def _end(self) -> None:
        parser = self.parser
        if parser is not None and (self.waiter is None or not self.waiter.done()):
            self._settle(None if parser.end() else ConnectionDropped(parser.received))

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


class HttpClient:
    """Keep-alive connections per origin (a destination has one), reused most recently
    used first; idle ones expire after KEEPALIVE. No bound of its own on connections: what
    uses it bounds them (a lane's workers, at most 256; the console's test events, one per
    admin connection, at most ADMIN_MAX_CONNECTIONS)."""

    def __init__(self, keepalive: float = KEEPALIVE) -> None:
        self._keepalive = keepalive
        self._idle: dict[tuple[bool, str, int], list[_Connection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._busy: set[_Connection] = set()
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
        head_only = method == "HEAD"
        connection = self._reuse(target)
        if connection is not None:
            try:
                return await self._send(connection, request, head_only, deadline)
            except ConnectionDropped as exc:
                if exc.received or self._closed:
                    raise
        connection = await self._connect(target, deadline)
        if self._closed:  # closed while connecting
            connection.close()
            raise ClientClosed("the HTTP client is closed")
        return await self._send(connection, request, head_only, deadline)

    async def _send(
        self, connection: _Connection, request: bytes, head_only: bool, deadline: float
    ) -> Reply:
        parser = ResponseParser(KEPT_REPLY, head_only)
        self._busy.add(connection)
        timer = None
        try:
            waiter = connection.send(request, parser)
            # a timer on the answer rather than asyncio.timeout: a third of the cost, and
            # the exchange runs for every delivery
            timer = asyncio.get_running_loop().call_at(deadline, connection.expire)
            await waiter
        except BaseException:
            connection.abort()
            raise
        finally:
            if timer is not None:
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
            if connection.fresh(oldest):
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
                        ssl=tls_context(),
                        server_hostname=target.host,
                    )
                else:
                    _, connection = await loop.create_connection(
                        _Connection, target.host, target.port
                    )
        except TimeoutError as exc:  # an OSError too: the deadline's has no errno
            if exc.errno is None:
                raise
            raise ConnectFailed(exc) from exc  # the kernel gave up (ETIMEDOUT)
        except OSError as exc:  # refused, unreachable, unknown host, TLS (ssl.SSLError)
            raise ConnectFailed(exc) from exc
        connection.origin = target.origin
        return connection

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
            kept = []
            for connection in idle:
                if connection.fresh(oldest):
                    kept.append(connection)
                else:
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
            client = self._by_destination[destination] = HttpClient()
        return client

    async def close(self) -> None:
        clients = (*self._by_destination.values(), self.default)
        self._by_destination.clear()
        await asyncio.gather(*(client.close() for client in clients))

    async def __aenter__(self) -> DestinationClients:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

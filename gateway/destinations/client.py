"""The outbound HTTP client of the HTTP and Slack destinations: a session (a pool of
keep-alive connections) per destination, and the one exchange they all go through. Does
network I/O.

Resending once: a request that went out on a keep-alive connection the peer closed before
answering (the race of a receiver closing an idle connection just as it is reused) is sent
again at once, a single time. That is the rule of Go's http.Transport for requests that
carry an Idempotency-Key, as every delivery does: the receiver most likely never saw it,
and if it did, the key tells it so. Any other drop is an ordinary failure of the attempt
(on a fresh connection the request may well have arrived). aiohttp's own retry of PUT and
other idempotent methods, on any connection, is switched off: it sent a PUT twice within
one attempt when a fresh connection dropped.

To tell the two cases apart the connector notes, per exchange, whether the connection it
handed out had served a request before. aiohttp's tracing says so too, but its signals
cost every request about 15 us of CPU (bench/fanout.py); a set lookup costs nothing.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

import aiohttp

#: connections a session opens at most, and per host (the default session; a destination's
#: own session has no per-host cap: its lane's concurrency, at most 256, bounds it)
MAX_CONNECTIONS = 256
MAX_CONNECTIONS_PER_HOST = 64
#: the longest any exchange may take; each destination's own timeout is shorter
SESSION_TIMEOUT = 300
#: of an answer's body, the part kept for the attempt record
KEPT_REPLY = 4096


class _Exchange:
    __slots__ = ("reused",)

    def __init__(self) -> None:
        self.reused = False


#: the exchange in progress in this task (the connector runs in the caller's task)
_CURRENT: ContextVar[_Exchange | None] = ContextVar("gateway_http_exchange", default=None)


class ReuseAwareConnector(aiohttp.TCPConnector):
    """A TCPConnector that marks the current exchange when its connection is a reused one."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._served: weakref.WeakSet[Any] = weakref.WeakSet()

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:  # noqa: ASYNC109 - aiohttp calls it so
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        if protocol is not None:
            reused = protocol in self._served
            exchange = _CURRENT.get()
            if exchange is not None:
                exchange.reused = reused  # of the connection the request goes out on now
            if not reused:
                self._served.add(protocol)
        return connection


@functools.lru_cache(maxsize=64)
def total_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """One ClientTimeout per destination timeout, made once (it is immutable), not per
    attempt."""
    return aiohttp.ClientTimeout(total=seconds)


def client_session(limit_per_host: int = MAX_CONNECTIONS_PER_HOST) -> aiohttp.ClientSession:
    """A session for deliveries and console test events. No proxies from the environment
    (a destination is reached as configured), no redirects followed (see `exchange`)."""
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=SESSION_TIMEOUT),
        connector=ReuseAwareConnector(limit=MAX_CONNECTIONS, limit_per_host=limit_per_host),
        trust_env=False,
    )
    # no public switch; aiohttp's own test client turns it off the same way. An aiohttp
    # without the attribute has no such retry (it came in 3.11)
    if hasattr(session, "_retry_connection"):
        session._retry_connection = False
    return session


class DestinationSessions:
    """One session, so one pool of keep-alive connections, per destination: a destination
    that is slow to answer holds only its own connections, never the ones another
    destination on the same host needs (with one pool, 64 per host, a slow lane of
    concurrency 64 stalled every other lane to that host). The lane's concurrency bounds
    each pool, so there is no per-host cap beyond MAX_CONNECTIONS. A destination's session
    is made at its first attempt and kept until shutdown (a reload that removes it leaves
    idle connections that the connector closes after its keep-alive time). `default` serves
    everything that is not a lane's attempt (the console's test events)."""

    def __init__(self) -> None:
        self.default = client_session()
        self._by_destination: dict[str, aiohttp.ClientSession] = {}

    def get(self, destination: str) -> aiohttp.ClientSession:
        session = self._by_destination.get(destination)
        if session is None:
            session = self._by_destination[destination] = client_session(limit_per_host=0)
        return session

    async def close(self) -> None:
        for session in (*self._by_destination.values(), self.default):
            await session.close()
        self._by_destination.clear()

    async def __aenter__(self) -> DestinationSessions:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def exchange(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Mapping[str, str], bytes]:
    """One HTTP exchange: status, headers and the first `KEPT_REPLY` bytes of the body;
    sent once more only when the first try met a stale keep-alive connection."""
    try:
        return await _once(session, method, url, kwargs, retry_allowed=True)
    except _StaleConnection:
        return await _once(session, method, url, kwargs, retry_allowed=False)


class _StaleConnection(Exception):
    """The request went out on a reused connection the peer had closed."""


async def _once(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    kwargs: dict[str, Any],
    retry_allowed: bool,
) -> tuple[int, Mapping[str, str], bytes]:
    current = _Exchange()
    token = _CURRENT.set(current)
    try:
        async with session.request(method, url, allow_redirects=False, **kwargs) as response:
            body = await response.content.read(KEPT_REPLY)
            return response.status, response.headers, body  # case-insensitive, not copied
    except aiohttp.ServerDisconnectedError:
        if retry_allowed and current.reused:
            raise _StaleConnection from None
        raise
    finally:
        _CURRENT.reset(token)

"""What a listener lets a connection do before it has sent a request: a cap on open
connections, and malformed requests logged as one short line. Does I/O (sockets).

Slow and idle clients: a connection that has not completed a request head within
`server.idle_timeout` of opening or of its last answer is closed (the timer runs from the
connection's start, and a trickle of header bytes does not restart it): the webhook
listener's fast path (gateway.web.fast_path) keeps that timer itself, and aiohttp's keep-alive
timer, which `serve` sets to the same value, does once a connection is handed to it. A slow
*body* is the webhook pipeline's own deadline.

The cap: each listener counts its open connections; past `limit`, a new one gets a
`503 too_many_connections` (IDWise retries) and is closed, a WARNING says so (at most every
10 s) and `idwise_gateway_connections_refused_total{listener}` counts it. File descriptors
are what the cap protects: without it a few hundred idle sockets left none for valid
webhooks, the store or script deliveries.

Malformed requests (a broken request line, header or chunk framing): aiohttp logged each as
an ERROR with a traceback, megabytes a second from one client. Here each is one INFO line
(`malformed request`), at most RATE a second; the next line says how many were left out.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from gateway.metrics import Metrics
from gateway.web.fast_path import FastPath
from gateway.web.responses import error_response
from gateway.web.wire import phrase

log = logging.getLogger("gateway.connections")

#: connections the admin listener accepts (metrics, reload, probes: a handful)
ADMIN_MAX_CONNECTIONS = 64
#: descriptors kept for everything but the listeners and the destinations' connection pools
#: (`fit_to_descriptors` adds those): the store, the console's outbound session, SMTP,
#: script pipes, log and config files
RESERVED_DESCRIPTORS = 512
#: a refused connection is held this long at most, reading and dropping what the client
#: sends, so that the 503 reaches it instead of a reset
REFUSE_LINGER = 2.0
MAX_LINGERING = 64
CAP_LOG_INTERVAL = 10.0

_REFUSAL_BODY = (
    b'{"status":"error","error":"too_many_connections",'
    b'"message":"the gateway has too many open connections; retry"}'
)
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 5\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n\r\n" % len(_REFUSAL_BODY)
) + _REFUSAL_BODY


class Listener:
    """One listening socket whose protocol factory guards aiohttp's: `start` binds it,
    `close` stops accepting (the runner's cleanup then closes the open connections)."""

    def __init__(
        self,
        name: str,
        runner: web.BaseRunner,
        limit: int,
        metrics: Metrics,
        fast_path: FastPath | None = None,
    ) -> None:
        self.name = name
        self.fast_path = fast_path
        self.limit = limit
        self.open = 0
        self.lingering = 0
        self._runner = runner
        self._metrics = metrics
        self._server: asyncio.Server | None = None
        self._refused_since_log = 0
        self._logged_at = -CAP_LOG_INTERVAL
        metrics.connections_refused.labels(name)  # the series exists at 0

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host, port, reuse_address=True)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def finish(self, grace: float) -> None:
        """After `close`: the fast path's connections end (the runner's cleanup ends
        aiohttp's), each request in flight answered within `grace`."""
        if self.fast_path is not None:
            await self.fast_path.shutdown(grace)

    def _protocol(self) -> asyncio.Protocol:
        return _Guarded(self)

    def handler(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None, "runner not set up"
        # aiohttp's Server makes a plain RequestHandler from these two; read defensively, so
        # that an aiohttp that renames them costs only the JSON form of malformed-request
        # answers, never the listener
        loop, options = getattr(server, "_loop", None), getattr(server, "_kwargs", None)
        if loop is None or not isinstance(options, dict):
            return server()
        try:
            return JsonErrorRequestHandler(server, loop=loop, **options)
        except TypeError:  # options this aiohttp's handler no longer takes: its own fallback
            return server()

    def refused(self) -> None:
        self._metrics.connections_refused.labels(self.name).inc()
        self._refused_since_log += 1
        now = time.monotonic()
        if now - self._logged_at >= CAP_LOG_INTERVAL:
            self._logged_at = now
            log.warning(
                "connection limit reached: new connections get 503 until some close",
                extra={
                    "fields": {
                        "listener": self.name,
                        "limit": self.limit,
                        "refused": self._refused_since_log,
                    }
                },
            )
            self._refused_since_log = 0


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's request handler, except that the answer to a request it cannot parse (a
    broken request line, header or chunk framing) is a JSON error like every other answer of
    the gateway, not aiohttp's plain text. aiohttp still logs it (through RequestErrorLog)
    and closes the connection."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if already sent
        if status == 500:
            answer = error_response(status, "internal", "internal error")
        elif status > 500:  # aiohttp's 503/504 of its own (a handler timeout)
            said = phrase(status)
            answer = error_response(status, said.lower().replace(" ", "_") or "error", said)
        else:
            problem = type(exc).__name__ if exc is not None else "BadRequest"
            answer = error_response(
                status, "malformed_request", f"the HTTP request could not be parsed ({problem})"
            )
        answer.force_close()  # as aiohttp's: the connection's framing cannot be trusted
        return answer


class _Guarded(asyncio.Protocol):
    """The listener's fast path (if it has one) or aiohttp's request handler behind the
    count, or a refusal past the limit. The protocol is made only once the connection is
    counted in; the fast path hands the connection to aiohttp's handler with `_hand_over`."""

    __slots__ = ("_inner", "_listener", "_refusal", "_transport")

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._inner: asyncio.Protocol | None = None
        self._refusal: _Refusal | None = None
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        listener = self._listener
        if listener.open >= listener.limit:
            listener.refused()
            self._refusal = _Refusal(listener, transport)
            return
        listener.open += 1
        self._transport = transport
        fast = listener.fast_path
        self._inner = listener.handler() if fast is None else fast.connection(self._hand_over)
        self._inner.connection_made(transport)

    def _hand_over(self, buffered: bytes) -> None:
        assert self._transport is not None
        handler = self._inner = self._listener.handler()
        handler.connection_made(self._transport)
        if buffered:
            handler.data_received(buffered)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        if self._refusal is not None:
            self._refusal.close()
        return None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._listener.open -= 1
            self._inner.connection_lost(exc)
            self._inner = None
            self._transport = None
        elif self._refusal is not None:
            self._refusal.lost()
            self._refusal = None


class _Refusal:
    """The 503 written at once, then the connection half-closed; what the client still sends
    is read and dropped until it closes or REFUSE_LINGER passes (closing with unread data
    would reset the connection, and the client could lose the answer)."""

    def __init__(self, listener: Listener, transport: Any) -> None:
        self._listener = listener
        self._transport = transport
        transport.write(REFUSAL)
        if listener.lingering >= MAX_LINGERING:
            self._timer: asyncio.TimerHandle | None = None
            transport.close()
            return
        listener.lingering += 1
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(REFUSE_LINGER, self.close)

    def close(self) -> None:
        self._transport.close()

    def lost(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._listener.lingering -= 1


def fit_to_descriptors(wanted: int, outbound: int = 0) -> tuple[int, str | None]:
    """The webhook listener's cap, fitted to this process's file-descriptor limit: the
    soft limit is raised to the hard one (the usual 1024 is low for a server), and if the
    cap still leaves fewer than RESERVED_DESCRIPTORS plus `outbound` free (the connections
    the destinations' pools can hold: their lanes' concurrency), it is lowered. Returns the
    cap and, when lowered, a warning for the log."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    room = soft - RESERVED_DESCRIPTORS - outbound - ADMIN_MAX_CONNECTIONS
    if wanted <= room:
        return wanted, None
    fitted = max(16, room)
    return fitted, (
        f"server.max_connections {wanted} does not fit the file-descriptor limit ({soft}); "
        f"using {fitted} (raise the limit with ulimit -n or the container's nofile)"
    )


class RequestErrorLog:
    """The `logger` of aiohttp's request handler: malformed requests become one rate-limited
    INFO line (and count as `requests_rejected_total{reason="malformed_request"}`); any other
    error (a bug) keeps its ERROR with the traceback."""

    RATE = 10.0  # lines a second, on average
    BURST = 20.0

    def __init__(
        self, metrics: Metrics, clock: Callable[[], float] = time.monotonic, listener: str = ""
    ) -> None:
        self._metrics = metrics
        self._clock = clock
        self._listener = listener
        self._tokens = self.BURST
        self._at = clock()
        self._suppressed = 0
        self._logger = logging.getLogger("aiohttp.server")

    def _allow(self) -> bool:
        now = self._clock()
        self._tokens = min(self.BURST, self._tokens + (now - self._at) * self.RATE)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def malformed(self, exc: HttpProcessingError, remote: object) -> None:
        self._metrics.reject("malformed_request")
        if not self._allow():
            self._suppressed += 1
            return
        fields: dict[str, Any] = {
            "msg_kind": "access",
            "listener": self._listener,
            "remote": remote if isinstance(remote, str) else None,
            "status": exc.code or 400,
            "problem": type(exc).__name__,
            "detail": str(exc.message)[:120],
        }
        if self._suppressed:
            fields["suppressed"] = self._suppressed
            self._suppressed = 0
        log.info("malformed request", extra={"fields": fields})

    # ---- the subset of logging.Logger that aiohttp's RequestHandler calls ----------------
    def exception(self, msg: str, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self.malformed(exc_info, args[0] if args else None)
            return
        self._logger.exception(msg, *args, exc_info=exc_info, **kwargs)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):  # a bad method: TLS or junk on the port
            self.malformed(exc, args[0] if args else None)
            return
        self._logger.debug(msg, *args, **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._logger.warning(msg, *args, **kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._logger.error(msg, *args, **kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._logger.info(msg, *args, **kwargs)

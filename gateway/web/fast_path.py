"""The webhook listener's fast path: a plain webhook POST is read, run through the webhook
pipeline and answered on the connection itself; the first request it does not recognise
hands the connection to aiohttp for good. Does I/O (the connection's transport).

Why: aiohttp's server side (its parser's request message, the payload stream, the request
object, the handler task's loop, the response writer) cost about 75 us of CPU a request on
this kind of machine where reading the same request straight off the bytes cost about 25
(bench/RESULTS.md, issue 15, sixth pass), and it was the larger part of what a webhook cost.

What it keeps from aiohttp's way:
- the requests it serves are those gateway.web.http_head recognises (the same headers and
  framing aiohttp's parser would give); anything else is aiohttp's, from its first byte;
- the same pipeline (gateway.web.webhook.ingest), answers, log line and metric;
- keep-alive, `Connection: close`, pipelined requests answered in order, TCP keep-alive;
- the listener's idle timeout (no complete head within `server.idle_timeout` of opening or
  of the last answer: closed; a client that trickles the start of a webhook's request line
  and then turns to another request gets aiohttp's own timer on top, so at most twice that)
  and the body's own deadline (408 after BODY_TIMEOUT);
- a pipeline in flight is not cancelled when its client leaves (its event is stored; the
  client retries and gets `duplicate`); shutdown lets it finish within the grace period.

Where it differs, on purpose:
- a client is read no faster than it is served (at most MAX_HEAD bytes past the request in
  flight), and one that sends and does not read its answers is cut off after
  `server.idle_timeout` without taking any (aiohttp's way waits for it as long as it stays);
- an answer given before the body arrived (401, 503) ends the connection: half-closed, and
  what the client still sends read and dropped for LINGER, so the answer is not lost to a
  reset (aiohttp reads the rest of the body and keeps the connection); a 500 (a bug) ends it
  too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from aiohttp import web
from aiohttp.tcp_helpers import tcp_keepalive

from gateway.errors import PayloadError
from gateway.web.http_head import HAND_OVER, MAX_HEAD, RequestHead, read_head, request_line
from gateway.web.keys import METRICS, RUNTIME
from gateway.web.webhook import BODY_TIMEOUT, Outcome, ingest, record, wire_answer

log = logging.getLogger("gateway.webhook")

#: an answer given before its body arrived: the connection is read and dropped this long
LINGER = 2.0
_INTERNAL = Outcome("internal", 500, "internal", "internal", "internal error")
_TRUNCATED = "body shorter than its Content-Length"

HandOverTo = Callable[[bytes], None]


class FastPath:
    """What one listener's fast connections share, and those connections (for shutdown)."""

    def __init__(self, app: web.Application, line: bytes, idle_timeout: float) -> None:
        self.app = app
        self.line = line
        self.idle_timeout = idle_timeout
        self.connections: set[WebhookConnection] = set()
        self._emptied: asyncio.Event | None = None

    @classmethod
    def for_path(cls, app: web.Application, path: str, idle_timeout: float) -> FastPath | None:
        """The fast path for webhooks POSTed to `path`, or None when the path is not one
        it can recognise byte for byte (every request then takes aiohttp's way)."""
        line = request_line(path)
        return None if line is None else cls(app, line, idle_timeout)

    def connection(self, hand_over: HandOverTo) -> WebhookConnection:
        return WebhookConnection(self, hand_over)

    def closed(self, connection: WebhookConnection) -> None:
        self.connections.discard(connection)
        if not self.connections and self._emptied is not None:
            self._emptied.set()

    async def shutdown(self, grace: float) -> None:
        """Idle connections close now; one with a request in flight closes once answered,
        within `grace`, else it is cut."""
        for connection in list(self.connections):
            connection.finish()
        if self.connections:
            self._emptied = asyncio.Event()
            try:
                async with asyncio.timeout(grace):
                    await self._emptied.wait()
            except TimeoutError:
                for connection in list(self.connections):
                    connection.cut()


class WebhookConnection(asyncio.Protocol):
    """One connection on the fast path, until it is handed over or closed."""

    def __init__(self, fast: FastPath, hand_over: HandOverTo) -> None:
        self._fast = fast
        self._hand_over_to = hand_over
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._remote: str | None = None
        self._buffer: bytes | bytearray = b""
        self._start = 0  # where, in the buffer, the request being read or served starts
        self._head: RequestHead | None = None  # the request in flight
        self._body_end = 0  # where its body ends (with no request in flight: _start)
        self._body_waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle: _Quiet | None = None
        self._deadline: asyncio.TimerHandle | _Quiet | None = None  # a linger's or close's end
        self._reading_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._writing_paused = False
        self._eof = False
        self._finishing = False  # shutdown: close once the request in flight is answered
        self._lingering = False

    # ---- asyncio's calls -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self._remote = peer[0] if isinstance(peer, tuple | list) and peer else None
        tcp_keepalive(transport)  # as aiohttp's handler: dead peers are found by the kernel
        self._fast.connections.add(self)
        self._idle = self._quiet(self._idle_out)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # what a client sends after an early answer is dropped
        buffer = self._buffer
        if not buffer:
            self._buffer = data
        elif isinstance(buffer, bytearray):
            buffer += data
        else:
            self._buffer = bytearray(buffer) + data
        if self._head is None:
            self._next_request()
            return
        waiter = self._body_waiter
        if waiter is not None and len(self._buffer) >= self._body_end and not waiter.done():
            waiter.set_result(None)
        self._flow()

    def eof_received(self) -> bool:
        self._eof = True
        if self._head is None or self._lingering:
            return False  # nothing in flight: the transport closes
        self._truncated()
        return True  # answer the request in flight, then close

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._cancel_idle()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._truncated()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._fast.closed(self)

    # ---- the requests ---------------------------------------------------------------------
    def _next_request(self) -> None:
        fast = self._fast
        max_body = fast.app[RUNTIME].current.server.max_body_bytes
        head = read_head(self._buffer, self._start, fast.line, max_body)
        if head is HAND_OVER:
            self._hand_over()
            return
        if head is not None:
            assert isinstance(head, RequestHead)
            self._cancel_idle()
            self._head = head
            self._body_end = self._start + head.size + head.content_length
            self._task = self._loop.create_task(self._serve(head))
        self._flow()

    async def _serve(self, head: RequestHead) -> None:
        app = self._fast.app
        try:
            outcome = await ingest(app, head.headers, self._remote, self._read_body)
            record(app[METRICS], outcome)
        except Exception:  # a bug: the same JSON 500 as aiohttp's way, never a traceback out
            path = self._fast.line[5:-11].decode()
            log.exception("unhandled error", extra={"fields": {"path": path}})
            outcome = _INTERNAL
        transport = self._transport
        if transport is None or transport.is_closing():
            return  # the client left; its event, if stored, is a duplicate on its retry
        received = len(self._buffer) >= self._body_end
        keep_alive = (
            head.keep_alive and received and not self._finishing and outcome is not _INTERNAL
        )
        transport.write(wire_answer(outcome, keep_alive))
        if not keep_alive:
            self._end(received)
            return
        self._consumed()
        if self._writing_paused and not await self._drained(transport):
            return
        self._head = None
        self._task = None
        if self._finishing:
            self._end(True)
            return
        if len(self._buffer) > self._start:
            self._next_request()  # pipelined: served now (even after the client's EOF)
        else:
            self._flow()
        if self._head is None and self._transport is not None:  # nothing more to serve now
            if self._eof:
                self._close()  # and nothing more will come
            else:
                self._idle = self._quiet(self._idle_out)

    async def _drained(self, transport: asyncio.Transport) -> bool:
        """Wait for a client that sends and does not read to take its answers (meanwhile
        it is not read either); one that takes nothing for `idle_timeout` is cut off."""
        self._drain_waiter = self._loop.create_future()
        cut_off = self._quiet(transport.abort)
        try:
            await self._drain_waiter  # resume_writing, or connection_lost
        finally:
            cut_off.cancel()
            self._drain_waiter = None
        return self._transport is not None and not transport.is_closing()

    async def _read_body(self, limit: int) -> bytes:
        head = self._head
        assert head is not None
        if head.content_length > limit:  # a reload lowered the limit since the head was read
            raise PayloadError("too_large", f"body larger than {limit} bytes", 413)
        if len(self._buffer) < self._body_end:
            if self._eof or self._transport is None:
                raise PayloadError("truncated_body", _TRUNCATED)
            self._body_waiter = self._loop.create_future()
            try:
                async with asyncio.timeout(BODY_TIMEOUT):
                    await self._body_waiter
            finally:
                self._body_waiter = None
        body = self._buffer[self._start + head.size : self._body_end]
        return body if isinstance(body, bytes) else bytes(body)

    def _consumed(self) -> None:
        """The request served is dropped from the buffer. Pipelined requests are not sliced
        off one by one (each slice would copy the rest: quadratic in a long pipeline); the
        buffer is cut once what was served is at least half of it."""
        buffer, end = self._buffer, self._body_end
        if end >= len(buffer):
            self._buffer, self._start = b"", 0
        elif end > len(buffer) - end:
            self._buffer, self._start = buffer[end:], 0
        else:
            self._start = end
        self._body_end = self._start

    def _truncated(self) -> None:
        waiter = self._body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(PayloadError("truncated_body", _TRUNCATED))

    # ---- the connection's end -------------------------------------------------------------
    def _hand_over(self) -> None:
        """aiohttp takes the connection, starting with the bytes not yet served."""
        self._cancel_idle()
        self._fast.closed(self)
        buffer = bytes(self._buffer[self._start :])
        self._buffer = b""
        transport = self._transport
        if transport is None or transport.is_closing():
            self._transport = None
            return  # the connection is ending: aiohttp would start and stop on a dead one
        self._resume_reading(transport)
        self._transport = None  # this protocol is done with it
        self._hand_over_to(buffer)

    def _end(self, received: bool) -> None:
        """After the last answer: closed at once when the client sent nothing more, else
        half-closed and read (and dropped) until the client closes or LINGER passes."""
        transport = self._transport
        if transport is None:
            return
        if self._eof or (received and len(self._buffer) == self._body_end):
            self._close()
            return
        self._lingering = True
        self._buffer = b""
        self._resume_reading(transport)
        if transport.can_write_eof():
            transport.write_eof()
        self._set_deadline(self._loop.call_later(LINGER, self._close))

    def _close(self) -> None:
        """Close once what was written is sent; a client that takes none of it within
        `idle_timeout` is cut off (uvloop's close alone waits for it as long as it stays)."""
        transport = self._transport
        if transport is None:
            return
        transport.close()
        if transport.get_write_buffer_size():
            self._set_deadline(self._quiet(transport.abort))

    def _set_deadline(self, deadline: asyncio.TimerHandle | _Quiet) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = deadline

    def _quiet(self, callback: Callable[[], object]) -> _Quiet:
        assert self._transport is not None
        return _Quiet(self._loop, self._transport, self._fast.idle_timeout, callback)

    def _idle_out(self) -> None:
        self._idle = None
        if self._head is None:
            self._close()

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _flow(self) -> None:
        """Read while at most MAX_HEAD bytes past the request in flight wait their turn
        (pipelined requests), else pause: a client is read no faster than it is served."""
        transport = self._transport
        if transport is None:
            return
        if len(self._buffer) - self._body_end <= MAX_HEAD:
            self._resume_reading(transport)
        elif not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()

    def _resume_reading(self, transport: asyncio.Transport) -> None:
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def finish(self) -> None:
        """Shutdown: close now if idle, else once the request in flight is answered."""
        self._finishing = True
        if self._head is None:
            self._close()

    def cut(self) -> None:
        """Shutdown's grace is over: the request in flight gets no answer."""
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self._transport.abort()


class _Quiet:
    """Calls `callback` once the client has gone `delay` without taking any of what was
    written to it (the transport's unsent bytes did not shrink). With nothing unsent it is
    a plain timer: the idle timeout. A client still taking its answers, however slowly, is
    never idle: each `delay` in which it took some starts another."""

    __slots__ = ("_callback", "_delay", "_handle", "_loop", "_transport", "_unsent")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.Transport,
        delay: float,
        callback: Callable[[], object],
    ) -> None:
        self._loop = loop
        self._transport = transport
        self._delay = delay
        self._callback = callback
        self._unsent = transport.get_write_buffer_size()
        self._handle = loop.call_later(delay, self._check)

    def _check(self) -> None:
        unsent = self._transport.get_write_buffer_size()
        if 0 < unsent < self._unsent:
            self._unsent = unsent
            self._handle = self._loop.call_later(self._delay, self._check)
            return
        self._callback()

    def cancel(self) -> None:
        self._handle.cancel()

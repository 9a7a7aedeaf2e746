"""Structured logs: one JSON line per record (or text for humans), secrets scrubbed.

Every record goes through the process's `Redactor`, the one redaction point, before it is
written. Callers attach fields with `extra={"fields": {...}}`. The handler installed by
`setup_logging` is the only state; it lives on the root logger like any logging handler.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from gateway.secret import Redactor

#: set by handlers that write their own log line, so the access log skips the request
LOGGED = web.RequestKey("logged", bool)


class JsonFormatter(logging.Formatter):
    _second = -1
    _stamp = ""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def _time(self, created: float) -> str:
        # one strftime per second, not per line: this runs for every webhook
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format_fields(
        self, created: float, level: int, name: str, msg: str, fields: dict[str, Any] | None
    ) -> str:
        entry: dict[str, Any] = {
            "time": self._time(created),
            "level": logging.getLevelName(level).lower(),
            "logger": name,
            "msg": msg,
        }
        if fields:
            entry.update(fields)
        return self.redactor.redact_json(entry)

    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", None) or {})
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        return self.format_fields(
            record.created, record.levelno, record.name, record.getMessage(), fields
        )


class TextFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def format_fields(
        self, created: float, level: int, name: str, msg: str, fields: dict[str, Any] | None
    ) -> str:
        tail = " ".join(
            f"{k}={v}" for k, v in (fields or {}).items() if v is not None and k != "msg_kind"
        )
        stamp = time.strftime("%H:%M:%S", time.localtime(created))
        line = f"{stamp} {logging.getLevelName(level):<7} {msg}" + (f"  {tail}" if tail else "")
        return self.redactor.redact(line)

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        line = self.format_fields(
            record.created, record.levelno, record.name, record.getMessage(), fields
        )
        if record.exc_info:
            line += "\n" + self.redactor.redact(self.formatException(record.exc_info))
        return line


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes log lines in batches: one write per FLUSH_INTERVAL (or FLUSH_LINES lines)
    instead of a write and flush per line, which cost a quarter of the event loop's time
    at a few thousand webhooks a second. Warnings and errors are written at once. On a hard
    kill up to FLUSH_INTERVAL of info lines can be lost; the events themselves are in the
    store, which is the record that counts."""

    FLUSH_INTERVAL = 0.2
    FLUSH_LINES = 512

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._wakeup = threading.Event()
        self._closed = False
        threading.Thread(target=self._flush_periodically, name="log-flusher", daemon=True).start()
        atexit.register(self.flush)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.append(line, urgent=record.levelno >= logging.WARNING)

    def append(self, line: str, urgent: bool = False) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._pending.append(line)
            urgent = urgent or len(self._pending) >= self.FLUSH_LINES
        if urgent:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if not self._pending:
                return
            text = "\n".join(self._pending) + "\n"
            self._pending.clear()
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken stream must never take the gateway down

    def _flush_periodically(self) -> None:
        while not self._closed:
            self._wakeup.wait(self.FLUSH_INTERVAL)
            self.flush()

    def close(self) -> None:
        self.flush()
        self._closed = True
        self._wakeup.set()
        super().close()


def log_fields(logger: logging.Logger, level: int, msg: str, fields: dict[str, Any]) -> None:
    """One structured line on the hot path (a webhook, an attempt): formatted straight into
    the batch, skipping the LogRecord machinery. Same output as `logger.log(..., extra=)`."""
    if not logger.isEnabledFor(level):
        return
    handlers = logging.root.handlers
    handler = handlers[0] if len(handlers) == 1 else None
    if not isinstance(handler, BatchingStreamHandler) or level >= logging.WARNING:
        logger.log(level, msg, extra={"fields": fields})
        return
    formatter = handler.formatter
    assert isinstance(formatter, JsonFormatter | TextFormatter)
    handler.append(formatter.format_fields(time.time(), level, logger.name, msg, fields))


def setup_logging(
    redactor: Redactor,
    fmt: str = "json",
    level: str = "info",
    stream: Any = None,
    batch: bool = False,
) -> logging.Handler:
    """Install the one handler of the process (replacing any), masking with `redactor`."""
    handler: logging.StreamHandler[Any]
    if batch:
        handler = BatchingStreamHandler(stream or sys.stderr)
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    formatter = JsonFormatter(redactor) if fmt == "json" else TextFormatter(redactor)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.INFO)
    return handler


class AccessLogger(AbstractAccessLogger):
    """aiohttp access log without query strings or headers (they can carry credentials)."""

    def log(self, request: BaseRequest, response: StreamResponse, duration: float) -> None:
        if request.get(LOGGED):
            return  # the webhook handler already wrote its own, richer line
        self.logger.info(
            "http request",
            extra={
                "fields": {
                    "msg_kind": "access",
                    "method": request.method,
                    "path": request.rel_url.path,
                    "status": response.status,
                    "remote": request.remote,
                    "duration": round(duration, 4),
                }
            },
        )

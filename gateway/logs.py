"""Structured logs: one JSON line per record (or text for humans), secrets scrubbed.

Every record goes through the process's `Redactor`, the one redaction point, before it is
written. Callers attach fields with `extra={"fields": {...}}`. The handler installed by
`setup_logging` is the only state; it lives on the root logger like any logging handler.
"""

from __future__ import annotations

import atexit
import json
import logging
import re
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


_LEVEL_NAMES: dict[int, str] = {}


def _level_name(level: int) -> str:
    name = _LEVEL_NAMES.get(level)
    if name is None:
        name = _LEVEL_NAMES[level] = logging.getLevelName(level).lower()
    return name


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
            "level": _level_name(level),
            "logger": name,
            "msg": msg,
            **(fields or {}),
        }
        return self.redactor.redact_json(entry)

    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", None) or {})
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        return self.format_fields(
            record.created, record.levelno, record.name, record.getMessage(), fields
        )


#: characters that break a line or drive a terminal: C0 and C1 controls, DEL, the Unicode
#: line and paragraph separators and the bidirectional overrides ("Trojan Source")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(text: str) -> str:
    """`text` safe to print on one terminal line: newlines, tabs and control bytes become
    visible escapes (`\\n`, `\\x1b`), so a payload can neither forge a log line nor send a
    terminal escape sequence. Used by the text log format and by the CLI's tables."""
    return _UNSAFE.sub(_escape_char, text)


_NEEDS_QUOTES = re.compile('[\\s="\\\\]')


def logfmt_value(value: Any) -> str:
    """One logfmt value: bare when it can be, else double-quoted with `\\` and `"` escaped;
    always one line. Lists and mappings are compact JSON."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = repr(value)
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    if text and not _NEEDS_QUOTES.search(text) and not _UNSAFE.search(text):
        return text
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + one_line(quoted) + '"'


def _logfmt_key(key: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "_", key)
    return cleaned or "_"


class TextFormatter(logging.Formatter):
    """logfmt (`key=value`, quoted where needed, one line per record): readable by people and
    parsed by Loki, Vector, Grafana and `hl`. Secrets are masked value by value, before
    quoting, so an escaped secret cannot slip past the redactor."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def format_fields(
        self, created: float, level: int, name: str, msg: str, fields: dict[str, Any] | None
    ) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        entry: dict[str, Any] = {
            "time": f"{stamp}.{int((created % 1) * 1000):03d}Z",
            "level": logging.getLevelName(level).lower(),
            "msg": msg,
        }
        for key, value in (fields or {}).items():
            if value is not None and key != "msg_kind":
                entry[key] = value
        return " ".join(
            f"{_logfmt_key(key)}={logfmt_value(self._redact(value))}"
            for key, value in entry.items()
        )

    def _redact(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redactor.redact(value)
        if isinstance(value, int | float | bool):
            return value
        return json.loads(self.redactor.redact_json(value))

    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", None) or {})
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        return self.format_fields(
            record.created, record.levelno, record.name, record.getMessage(), fields
        )


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
    # access lines stay at INFO even when the gateway logs less; at DEBUG the probes show too
    logging.getLogger("aiohttp.access").setLevel(min(logging.INFO, root.level))
    return handler


#: probes and scrapes: every few seconds from Kubernetes and Prometheus, so logged only when
#: they fail (or at DEBUG); otherwise they would be most of the log
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class AccessLogger(AbstractAccessLogger):
    """aiohttp access log without query strings or headers (they can carry credentials)."""

    def log(self, request: BaseRequest, response: StreamResponse, duration: float) -> None:
        if request.get(LOGGED):
            return  # the webhook handler already wrote its own, richer line
        path = request.rel_url.path
        level = logging.INFO
        if path in QUIET_PATHS and response.status < 400:
            level = logging.DEBUG
        if not self.logger.isEnabledFor(level):
            return
        self.logger.log(
            level,
            "http request",
            extra={
                "fields": {
                    "msg_kind": "access",
                    "method": request.method,
                    "path": path,
                    "status": response.status,
                    "remote": request.remote,
                    "duration_ms": round(duration * 1000, 1),
                }
            },
        )

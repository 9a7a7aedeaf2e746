"""Structured logs: one JSON line per record (or text for humans), secrets scrubbed.

Every record goes through `redact`, the one redaction point, before it is written.
Callers attach fields with `extra={"fields": {...}}`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from gateway.secret import redact

#: set by handlers that write their own log line, so the access log skips the request
LOGGED = web.RequestKey("logged", bool)


class JsonFormatter(logging.Formatter):
    _second = -1
    _stamp = ""

    def _time(self, created: float, msecs: float) -> str:
        # one strftime per second, not per line: this runs for every webhook
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record.created, record.msecs),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        tail = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None and k != "msg_kind")
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<7} {record.getMessage()}" + (
            f"  {tail}" if tail else ""
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def setup_logging(fmt: str = "json", level: str = "info", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.INFO)


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

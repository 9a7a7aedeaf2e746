"""HTTP handlers: thin glue between requests, the pure core and the store. Does I/O.

Order on the webhook path: draining? -> auth (IP, then credentials) -> size -> parse ->
route (pure) -> one durable commit of the event and its deliveries -> 200.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.auth import authenticate
from gateway.delivery import DeliveryEngine
from gateway.errors import AuthError, PayloadError, StoreError
from gateway.events import parse_event
from gateway.logs import LOGGED, log_fields
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.rules import match_rules
from gateway.runtime import RuntimeHolder
from gateway.secret import redact
from gateway.store import Store

log = logging.getLogger("gateway.webhook")

BODY_TIMEOUT = 10.0  # a client that trickles its body is cut off (slowloris)
#: requests waiting for a commit; beyond this the store is not keeping up (an fsync stall):
#: answer 503 at once rather than pile bodies up in memory
MAX_WAITING_FOR_COMMIT = 4096
READY_CACHE = 1.0
KEPT_HEADERS = ("Content-Type", "User-Agent", "X-Forwarded-For", "X-Request-Id", "Content-Length")


@dataclass
class GatewayState:
    holder: RuntimeHolder
    metrics: Metrics
    store: Store | None = None
    engine: DeliveryEngine | None = None
    draining: bool = False
    waiting_for_commit: int = 0
    _ready: tuple[float, bool] = field(default=(0.0, False))

    async def store_writable(self) -> bool:
        checked_at, ok = self._ready
        if time.monotonic() - checked_at < READY_CACHE:
            return ok
        ok = False
        if self.store is not None:
            try:
                await asyncio.wait_for(self.store.heartbeat(), 5.0)
                ok = True
            except (StoreError, TimeoutError):
                ok = False
        self._ready = (time.monotonic(), ok)
        return ok


STATE = web.AppKey("state", GatewayState)


def error_response(status: int, reason: str, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"status": "error", "error": reason, "message": message},
        status=status,
        headers=headers or None,
    )


async def _read_body(request: web.Request, limit: int) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadError("too_large", f"body larger than {limit} bytes", 413)
    if length is not None:
        # a small webhook has usually arrived with its headers: take it without waiting
        buffered = request.content.read_nowait(length)
        if len(buffered) == length:
            return buffered
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                return buffered + await request.content.readexactly(length - len(buffered))
        except asyncio.IncompleteReadError:
            raise PayloadError("truncated_body", "body shorter than its Content-Length") from None
    chunks: list[bytes] = []  # chunked: count as it arrives, stop at the limit
    size = 0
    async with asyncio.timeout(BODY_TIMEOUT):
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > limit:
                raise PayloadError("too_large", f"body larger than {limit} bytes", 413)
            chunks.append(chunk)
    return b"".join(chunks)


def _kept_headers(request: web.Request, secret_header_names: set[str]) -> dict[str, str]:
    kept = {name: request.headers[name] for name in KEPT_HEADERS if name in request.headers}
    if "Authorization" in request.headers:
        scheme = request.headers["Authorization"].split(" ", 1)[0].lower()
        kept["Authorization"] = {"basic": "Basic ****", "bearer": "Bearer ****"}.get(scheme, "****")
    for name in secret_header_names:
        if name in request.headers:
            kept[name] = "****"
    return kept


async def receive_webhook(request: web.Request) -> web.Response:
    state = request.app[STATE]
    metrics = state.metrics
    request[LOGGED] = True
    if state.draining:
        metrics.reject("shutting_down")
        return error_response(
            503, "shutting_down", "gateway is shutting down; retry", **{"Retry-After": "5"}
        )
    config = state.holder.current  # one config for the whole request, whatever reloads happen
    try:
        client = authenticate(config.auth, request.headers, request.remote)
    except AuthError as exc:
        metrics.reject(exc.reason)
        log_fields(
            log,
            logging.INFO,
            "webhook refused",
            {
                "msg_kind": "webhook",
                "outcome": "refused",
                "reason": exc.reason,
                "remote": request.remote,
            },
        )
        if exc.reason == "ip_denied":
            return error_response(403, "forbidden", "source address not allowed")
        headers = (
            {"WWW-Authenticate": 'Basic realm="idwise-gateway", charset="UTF-8"'}
            if config.auth.basic
            else {}
        )
        return error_response(401, "unauthorized", "missing or invalid credentials", **headers)
    # every Content-Encoding header counts: aiohttp would inflate a gzip body named by any of
    # them, so a second header must not smuggle a compressed (bomb) body past this check
    encodings = {
        part.strip().lower()
        for value in request.headers.getall("Content-Encoding", ())
        for part in value.split(",")
    }
    try:
        if encodings - {"", "identity"}:
            raise PayloadError(
                "unsupported_encoding",
                "Content-Encoding is not accepted; send the JSON body as is",
                415,
            )
        raw = await _read_body(request, config.server.max_body_bytes)
        event = parse_event(raw)
    except PayloadError as exc:
        metrics.reject(exc.reason)
        log_fields(
            log,
            logging.INFO,
            "webhook rejected",
            {"msg_kind": "webhook", "outcome": "rejected", "reason": exc.reason},
        )
        return error_response(exc.status, exc.reason, str(exc))
    except TimeoutError:
        metrics.reject("body_timeout")
        return error_response(408, "body_timeout", f"body not received within {BODY_TIMEOUT:g}s")
    routes, rules = match_rules(config.rules, config.unmatched, event.type, event.document)
    store = state.store
    assert store is not None
    secret_headers = {h.name for h in config.auth.headers}
    if state.waiting_for_commit >= MAX_WAITING_FOR_COMMIT:
        metrics.webhook(event.type, "overloaded")
        return error_response(
            503, "overloaded", "store is not keeping up; retry", **{"Retry-After": "10"}
        )
    state.waiting_for_commit += 1
    try:
        accepted = await store.accept(
            event,
            routes,
            rules,
            str(client) if client else request.remote,
            _kept_headers(request, secret_headers),
        )
    except StoreError as exc:
        metrics.webhook(event.type, "store_error")
        log_fields(
            log,
            logging.ERROR,
            "webhook not stored",
            {
                "msg_kind": "webhook",
                "eventId": event.dedupe_key,
                "event": event.type,
                "outcome": "store_error",
                "reason": exc.reason,
            },
        )
        return error_response(
            503,
            "store_unavailable",
            f"event not stored ({exc.reason}); retry",
            **{"Retry-After": "10"},
        )
    finally:
        state.waiting_for_commit -= 1
    if accepted.status == "accepted" and accepted.delivery_ids and state.engine is not None:
        state.engine.wake(destination for destination, _ in routes)
    metrics.webhook(event.type, accepted.status)
    log_fields(
        log,
        logging.INFO,
        "webhook received",
        {
            "msg_kind": "webhook",
            "eventId": event.dedupe_key,
            "event": event.type,
            "journeyId": event.journey_key,
            "outcome": accepted.status,
            "rules": list(rules),
            "destinations": [d for d, _ in routes] if accepted.status == "accepted" else [],
        },
    )
    body = b'{"status":"%s","eventId":%s}' % (
        accepted.status.encode(),
        json.dumps(event.dedupe_key).encode(),
    )
    return web.Response(body=body, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    checks: dict[str, Any] = {
        "config": "ok" if state.holder.current else "missing",
        "store": "ok" if await state.store_writable() else "unwritable",
        "draining": state.draining,
    }
    ready = checks["config"] == "ok" and checks["store"] == "ok" and not state.draining
    return web.json_response(
        {"status": "ready" if ready else "not_ready", **checks}, status=200 if ready else 503
    )


async def metrics_endpoint(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.store is not None:
        try:
            rows = await state.store.pending_stats()
            now = time.time()
            oldest = min((r["oldest"] for r in rows), default=None)
            state.metrics.set_pending(
                {r["destination"]: r["pending"] for r in rows}, now - oldest if oldest else 0.0
            )
        except StoreError:
            pass
    state.metrics.store_writable.set(1 if await state.store_writable() else 0)
    return web.Response(body=state.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def reload_endpoint(request: web.Request) -> web.Response:
    from gateway.app import RELOAD

    result = await request.app[RELOAD]("http")
    body = {
        "status": "ok" if result.ok else "error",
        "config_hash": result.digest,
        "changed": result.changed,
        "restart_needed": list(result.restart_needed),
    }
    if not result.ok:
        body["errors"] = [redact(error) for error in result.errors]
    return web.json_response(
        body, status=200 if result.ok else 400, dumps=lambda o: json.dumps(o, ensure_ascii=False)
    )

"""`serve`: load the config, start both listeners, route signals, shut down gracefully.

SIGHUP asks the runtime for a reload (bursts collapse); SIGTERM/SIGINT drain: /readyz and
new webhooks answer 503 at once, requests in flight are answered, attempts in flight get
`server.shutdown_grace`, everything else stays pending for the next start.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from pathlib import Path

from aiohttp import web

from gateway.config.load import load_config
from gateway.config.model import Config
from gateway.errors import ConfigError, StoreError
from gateway.logs import AccessLogger, setup_logging
from gateway.secret import Redactor
from gateway.store import serve_lock
from gateway.web.app import create_admin_app, create_app
from gateway.web.connections import (
    ADMIN_MAX_CONNECTIONS,
    Listener,
    RequestErrorLog,
    fit_to_descriptors,
)
from gateway.web.dispatch import route_webhooks_directly
from gateway.web.fast_path import FastPath
from gateway.web.keys import LIFECYCLE, METRICS, RUNTIME

log = logging.getLogger("gateway")


async def serve(config_path: Path, *, watch: bool = False, log_format: str | None = None) -> int:
    redactor = Redactor()  # the process's one redaction point; reloads add to it
    try:
        config = load_config(config_path, redactor=redactor)
    except ConfigError as exc:
        setup_logging(redactor, log_format or "text")
        for problem in exc.problems:
            log.error(str(problem))
        return 1
    fmt = log_format or config.logging.format
    setup_logging(redactor, fmt, config.logging.level, batch=True)
    for warning in config.warnings:
        log.warning(warning)
    lock = serve_lock(config.storage)  # one gateway per SQLite file, for this process's life
    try:
        lock.acquire()
    except (StoreError, OSError) as exc:
        log.error(
            "cannot serve this store",
            extra={"fields": {"error": str(exc), "path": str(config.storage.path)}},
        )
        return 1
    try:
        return await _serve(config, watch)
    finally:
        lock.release()


#: the collector's youngest generation is collected after this many allocations (Python's
#: default is 700): a webhook allocates a few hundred objects that die with its request, and
#: at several thousand webhooks per second the default ran a collection every few requests
GC_YOUNG_THRESHOLD = 20_000


def _settle_heap() -> None:
    """Move everything startup built (modules, the compiled config, the app) out of the
    collector's sight, and collect the youngest generation less often. Garbage with cycles is
    still collected; only the scans of objects that live as long as the process are saved.
    Run again after each reload: the unfreeze lets the replaced config's cycles be collected
    (a frozen object never is), at the price of one full collection per reload."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


async def _serve(config: Config, watch: bool) -> int:
    app = create_app(config)
    listening = await _listen(app, config)
    if listening is None:
        return 1
    runners, listeners = listening
    _settle_heap()
    _log_started(config, watch)
    runtime = app[RUNTIME]
    runtime.subscribe(lambda _new_config: _settle_heap())
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, runtime.request_reload)
    runtime.start(watch=watch)
    await stop.wait()
    log.info("shutting down", extra={"fields": {"grace": config.server.shutdown_grace}})
    await runtime.stop()
    # /readyz and new webhooks answer 503 at once (IDWise retries) while attempts in flight
    # get their grace period; only then do the listeners close
    await app[LIFECYCLE].drain()
    for listener in listeners:
        listener.close()
    for listener in listeners:
        await listener.finish(config.server.shutdown_grace)
    for runner in reversed(runners):
        await runner.cleanup()
    log.info("stopped")
    return 0


async def _listen(
    app: web.Application, config: Config
) -> tuple[list[web.AppRunner], list[Listener]] | None:
    """Both runners set up and listening, or None (after logging why) with nothing left open.

    Both listeners: a connection that has not completed a request head within
    `server.idle_timeout` of opening or of its last answer is closed (aiohttp's keep-alive
    timer), malformed requests are one short INFO line each, and open connections are
    capped (see gateway.web.connections)."""
    metrics = app[METRICS]
    runner = web.AppRunner(
        app,
        access_log_class=AccessLogger,
        handle_signals=False,
        shutdown_timeout=config.server.shutdown_grace,
        auto_decompress=False,  # compressed bodies are refused (415), never inflated
        keepalive_timeout=config.server.idle_timeout,
        logger=RequestErrorLog(metrics, listener="webhook"),
    )
    admin_runner = web.AppRunner(
        create_admin_app(app),
        access_log_class=AccessLogger,
        handle_signals=False,
        keepalive_timeout=config.server.idle_timeout,
        logger=RequestErrorLog(metrics, listener="admin"),
    )
    # each HTTP or Slack destination has its own pool, as large as its lane's concurrency
    outbound = sum(
        d.policy.concurrency for d in config.destinations.values() if d.type in ("http", "slack")
    )
    limit, lowered = fit_to_descriptors(config.server.max_connections, outbound)
    if lowered:
        log.warning(lowered)
    fast_path = FastPath.for_path(app, config.server.path, config.server.idle_timeout)
    listeners = [
        Listener("webhook", runner, limit, metrics, fast_path),
        Listener("admin", admin_runner, ADMIN_MAX_CONNECTIONS, metrics),
    ]
    try:
        await runner.setup()
    except StoreError as exc:
        log.error(
            "cannot open the store",
            extra={"fields": {"reason": exc.reason, "path": str(config.storage.path)}},
        )
        return None
    route_webhooks_directly(runner, config.server.path)
    await admin_runner.setup()
    try:
        # admin first: once the webhook port answers, metrics and reload answer too
        await listeners[1].start(config.admin.host, config.admin.port)
        await listeners[0].start(config.server.host, config.server.port)
    except OSError as exc:
        log.error("cannot listen", extra={"fields": {"error": str(exc)}})
        for listener in listeners:
            listener.close()
        await admin_runner.cleanup()
        await runner.cleanup()
        return None
    return [runner, admin_runner], listeners


def _log_started(config: Config, watch: bool) -> None:
    log.info(
        "gateway started",
        extra={
            "fields": {
                "listen": f"{config.server.host}:{config.server.port}{config.server.path}",
                "admin": f"{config.admin.host}:{config.admin.port}",
                # postgres: the backend's name only, the DSN carries the password
                "store": "postgres"
                if config.storage.backend == "postgres"
                else str(config.storage.path),
                "durability": config.storage.durability,
                "rules": len(config.rules),
                "destinations": len(config.destinations),
                "watch": watch,
            }
        },
    )

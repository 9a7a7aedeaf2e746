"""`serve`: load the config, start both listeners, route signals, shut down gracefully.

SIGHUP asks the runtime for a reload (bursts collapse); SIGTERM/SIGINT drain: /readyz and
new webhooks answer 503 at once, requests in flight are answered, attempts in flight get
`server.shutdown_grace`, everything else stays pending for the next start.
"""

from __future__ import annotations

import asyncio
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
from gateway.web.keys import LIFECYCLE, RUNTIME

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


async def _serve(config: Config, watch: bool) -> int:
    app = create_app(config)
    runners = await _listen(app, config)
    if runners is None:
        return 1
    _log_started(config, watch)
    runtime = app[RUNTIME]
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
    for runner in reversed(runners):
        await runner.cleanup()
    log.info("stopped")
    return 0


async def _listen(app: web.Application, config: Config) -> list[web.AppRunner] | None:
    """Both runners set up and listening, or None (after logging why) with nothing left open."""
    runner = web.AppRunner(
        app,
        access_log_class=AccessLogger,
        handle_signals=False,
        shutdown_timeout=config.server.shutdown_grace,
        auto_decompress=False,  # compressed bodies are refused (415), never inflated
    )
    admin_runner = web.AppRunner(
        create_admin_app(app), access_log_class=AccessLogger, handle_signals=False
    )
    try:
        await runner.setup()
    except StoreError as exc:
        log.error(
            "cannot open the store",
            extra={"fields": {"reason": exc.reason, "path": str(config.storage.path)}},
        )
        return None
    await admin_runner.setup()
    try:
        await web.TCPSite(
            runner, config.server.host, config.server.port, reuse_address=True
        ).start()
        await web.TCPSite(
            admin_runner, config.admin.host, config.admin.port, reuse_address=True
        ).start()
    except OSError as exc:
        log.error("cannot listen", extra={"fields": {"error": str(exc)}})
        await admin_runner.cleanup()
        await runner.cleanup()
        return None
    return [runner, admin_runner]


def _log_started(config: Config, watch: bool) -> None:
    log.info(
        "gateway started",
        extra={
            "fields": {
                "listen": f"{config.server.host}:{config.server.port}{config.server.path}",
                "admin": f"{config.admin.host}:{config.admin.port}",
                "store": str(config.storage.path),
                "rules": len(config.rules),
                "destinations": len(config.destinations),
                "watch": watch,
            }
        },
    )

"""Application wiring: the two aiohttp apps, their middlewares and resources, and `serve`.

Resources are cleanup contexts set up in dependency order (store, client session, delivery
engine, maintenance) and torn down in reverse. The admin app shares the webhook app's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.config.load import load_config
from gateway.config.model import Config
from gateway.delivery import DeliveryEngine
from gateway.destinations.base import connection_reuse_tracer
from gateway.errors import ConfigError, StoreError
from gateway.handlers import (
    STATE,
    GatewayState,
    error_response,
    healthz,
    metrics_endpoint,
    readyz,
    receive_webhook,
    reload_endpoint,
)
from gateway.logs import AccessLogger, setup_logging
from gateway.metrics import Metrics
from gateway.runtime import ReloadResult, RuntimeHolder, content_digest
from gateway.secret import redact
from gateway.store import Store

log = logging.getLogger("gateway")

Reloader = Callable[[str], Awaitable[ReloadResult]]
RELOAD: web.AppKey[Reloader] = web.AppKey("reload")
RETENTION_INTERVAL = 60.0
WATCH_INTERVAL = 1.0


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error is a JSON answer; never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.reason.lower().replace(" ", "_")
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}
        return error_response(exc.status, reason, exc.reason, **headers)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error", extra={"fields": {"path": request.rel_url.path}})
        return error_response(500, "internal", "internal error")


def _admin_auth(state: GatewayState) -> Callable[..., Awaitable[web.StreamResponse]]:
    import hmac

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        token = state.holder.current.admin.token
        if token and request.rel_url.path not in ("/healthz", "/readyz"):
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(
                given.encode("utf-8", "surrogateescape"), token.reveal().encode()
            ):
                return error_response(
                    401, "unauthorized", "admin token required", **{"WWW-Authenticate": "Bearer"}
                )
        return await handler(request)

    return middleware


# ------------------------------------------------------------------------ cleanup contexts
async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    storage = state.holder.current.storage
    store = Store(storage.path, storage.busy_timeout, storage.max_size)
    await store.open()
    state.store = store
    state.metrics.watch_store(lambda: store.writer_stats)
    yield
    await store.close()


async def _engine_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    assert state.store is not None
    timeout = aiohttp.ClientTimeout(total=300)  # per-request timeouts come from each destination
    connector = aiohttp.TCPConnector(limit=256, limit_per_host=64)
    async with aiohttp.ClientSession(
        timeout=timeout,
        connector=connector,
        trust_env=False,
        trace_configs=[connection_reuse_tracer()],
    ) as session:
        engine = DeliveryEngine(
            state.store,
            destinations=lambda: dict(state.holder.current.destinations),
            default_policy=lambda: state.holder.current.delivery,
            session=session,
            metrics=state.metrics,
        )
        state.engine = engine
        engine.start()
        yield
        await engine.stop(state.holder.current.server.shutdown_grace)


async def _maintenance_ctx(app: web.Application) -> AsyncIterator[None]:
    """Retention: prune old events in small batches, yielding to ingest between them."""
    state = app[STATE]

    async def prune_forever() -> None:
        while True:
            try:
                await prune_once(state)
            except StoreError as exc:
                log.warning("retention pass failed", extra={"fields": {"reason": exc.reason}})
            await asyncio.sleep(RETENTION_INTERVAL)

    task = asyncio.create_task(prune_forever(), name="retention")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def prune_once(state: GatewayState) -> int:
    assert state.store is not None
    cutoff = time.time() - state.holder.current.storage.retention
    total = 0
    while (removed := await state.store.prune(cutoff)) > 0:
        total += removed
        await asyncio.sleep(0.01)  # let ingest commits in between
    if total:
        log.info("retention pruned events", extra={"fields": {"events": total}})
    return total


# ------------------------------------------------------------------------------ factories
def create_app(config: Config, metrics: Metrics | None = None) -> web.Application:
    """The webhook listener app; owns the resources (store, session, engine, maintenance)."""
    state = GatewayState(holder=RuntimeHolder(config), metrics=metrics or Metrics())
    state.metrics.reload_ok.set(1)
    state.metrics.reload_time.set(time.time())
    state.metrics.prime(config.destinations)
    app = web.Application(
        middlewares=[json_errors], client_max_size=config.server.max_body_bytes + 1
    )
    app[STATE] = state

    async def reload(source: str) -> ReloadResult:
        result = await state.holder.reload(source)
        state.metrics.reload_ok.set(1 if result.ok else 0)
        if result.ok:
            state.metrics.reload_time.set(time.time())
            state.metrics.prime(state.holder.current.destinations)
            if state.engine is not None:
                state.engine.wake()
        return result

    app[RELOAD] = reload
    app.cleanup_ctx.extend([_store_ctx, _engine_ctx, _maintenance_ctx])
    app.router.add_post(config.server.path, receive_webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def create_admin_app(main: web.Application) -> web.Application:
    state = main[STATE]
    admin = web.Application(middlewares=[json_errors, _admin_auth(state)])
    admin[STATE] = state
    admin[RELOAD] = main[RELOAD]
    admin.router.add_get("/metrics", metrics_endpoint)
    admin.router.add_post("/-/reload", reload_endpoint)
    admin.router.add_get("/healthz", healthz)
    admin.router.add_get("/readyz", readyz)
    return admin


# ---------------------------------------------------------------------------------- serve
async def serve(config_path: Path, *, watch: bool = False, log_format: str | None = None) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        setup_logging(log_format or "text")
        for problem in exc.problems:
            log.error(redact(str(problem)))
        return 1
    setup_logging(log_format or config.logging.format, config.logging.level, batch=True)
    for warning in config.warnings:
        log.warning(redact(warning))
    app = create_app(config)
    admin = create_admin_app(app)
    state = app[STATE]
    grace = config.server.shutdown_grace
    runner = web.AppRunner(
        app,
        access_log_class=AccessLogger,
        handle_signals=False,
        shutdown_timeout=grace,
        auto_decompress=False,  # compressed bodies are refused (415), never inflated
    )
    admin_runner = web.AppRunner(admin, access_log_class=AccessLogger, handle_signals=False)
    try:
        await runner.setup()
    except StoreError as exc:
        log.error(
            "cannot open the store",
            extra={"fields": {"reason": exc.reason, "path": str(config.storage.path)}},
        )
        return 1
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
        return 1
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

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reload_requested = asyncio.Event()
    reload_fn = app[RELOAD]
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_requested.set)

    async def reloader() -> None:
        while True:
            await reload_requested.wait()
            reload_requested.clear()  # a burst of SIGHUPs collapses into this one reload
            try:
                await reload_fn("signal")
            except Exception:  # a reload must never stop later reloads
                log.exception("reload failed")

    async def watcher() -> None:
        current = state.holder.current
        seen = content_digest(current.files, current.rules_patterns)
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            current = state.holder.current
            digest = await asyncio.to_thread(content_digest, current.files, current.rules_patterns)
            if digest != seen:
                seen = digest
                log.info("config files changed; reloading")
                reload_requested.set()

    tasks = [asyncio.create_task(reloader(), name="reloader")]
    if watch:
        tasks.append(asyncio.create_task(watcher(), name="watcher"))
    await stop.wait()
    log.info("shutting down", extra={"fields": {"grace": config.server.shutdown_grace}})
    state.draining = True  # /readyz 503 and new webhooks 503 at once; IDWise will retry
    for task in tasks:
        task.cancel()
    if state.engine is not None:
        # in-flight attempts get the grace period; the rest stay pending for the next start
        await state.engine.stop(grace)
    await admin_runner.cleanup()
    await runner.cleanup()
    log.info("stopped")
    return 0

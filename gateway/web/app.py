"""The two aiohttp apps: routes, middlewares and the cleanup contexts that own resources.

Each resource has one cleanup context, set up in dependency order and torn down in reverse:
the store, then the delivery engine (with its HTTP clients; stopping it gives attempts in
flight `server.shutdown_grace`), then retention. The admin app serves beside the webhook app
and reaches its resources through `GATEWAY`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.config.model import Config
from gateway.delivery import DeliveryEngine
from gateway.destinations.client import DestinationClients
from gateway.metrics import Metrics
from gateway.retention import prune_forever
from gateway.runtime import Runtime
from gateway.store import create_store
from gateway.web.admin import metrics_endpoint, reload_endpoint
from gateway.web.console.routes import add_console
from gateway.web.health import healthz, readyz
from gateway.web.keys import ENGINE, GATEWAY, HTTP_CLIENT, LIFECYCLE, METRICS, RUNTIME, STORE
from gateway.web.lifecycle import Lifecycle
from gateway.web.middleware import admin_auth, json_errors
from gateway.web.webhook import receive_webhook


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = create_store(app[RUNTIME].current.storage)
    await store.open()
    app[STORE] = store
    app[METRICS].watch_store(lambda: store.writer_stats)
    yield
    await store.close()


async def _engine_ctx(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    store = app[STORE]
    async with DestinationClients() as clients:
        app[HTTP_CLIENT] = clients.default
        engine = DeliveryEngine(
            store,
            destinations=lambda: dict(runtime.current.destinations),
            default_policy=lambda: runtime.current.delivery,
            client=clients.default,
            metrics=app[METRICS],
            clients=clients,
        )
        app[ENGINE] = engine
        stop_listening = store.listen(engine.wake)
        unsubscribe = runtime.subscribe(lambda _: engine.wake())
        # the one place the engine stops, as a drain step: `serve` drains while the listeners
        # still answer 503; a test client's teardown drains here. In-flight attempts get the
        # grace period; the rest stay pending for the next start.
        app[LIFECYCLE].on_drain(lambda: engine.stop(runtime.current.server.shutdown_grace))
        engine.start()
        yield
        unsubscribe()
        stop_listening()
        await app[LIFECYCLE].drain()


async def _retention_ctx(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    task = asyncio.create_task(
        prune_forever(app[STORE], lambda: runtime.current.storage.retention), name="retention"
    )
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(config: Config, metrics: Metrics | None = None) -> web.Application:
    """The webhook listener app; owns the resources (store, engine, retention)."""
    metrics = metrics or Metrics()
    app = web.Application(
        middlewares=[json_errors], client_max_size=config.server.max_body_bytes + 1
    )
    app[METRICS] = metrics
    app[RUNTIME] = Runtime(config, metrics)
    app[LIFECYCLE] = Lifecycle()
    app.cleanup_ctx.extend([_store_ctx, _engine_ctx, _retention_ctx])
    app.router.add_post(config.server.path, receive_webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def create_admin_app(main: web.Application) -> web.Application:
    runtime = main[RUNTIME]
    admin = web.Application(middlewares=[json_errors, admin_auth(runtime)])
    admin[GATEWAY] = main
    admin[RUNTIME] = runtime
    admin.router.add_get("/metrics", metrics_endpoint)
    admin.router.add_post("/-/reload", reload_endpoint)
    admin.router.add_get("/healthz", healthz)
    admin.router.add_get("/readyz", readyz)
    add_console(admin)  # `/` and its pages; answers 404 while no admin token is configured
    return admin

"""Every shared fixture. The machinery behind them lives in tests/support/."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.config.load import load_config
from gateway.destinations.client import HttpClient
from gateway.web.app import create_app
from gateway.web.dispatch import route_webhooks_directly
from tests.support.config import base_config, free_port, write_config
from tests.support.destinations import Harness
from tests.support.process import CliServer, GatewayClient
from tests.support.sinks import MakeSink, Sink, SinkLoop
from tests.support.tls import Certificates, make_certificates

# the PostgreSQL server fixtures (a real server, started once per run when a test asks)
pytest_plugins = ["tests.support.postgres"]


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    server = await Sink().start()
    yield server
    await server.stop()


@pytest.fixture
async def make_sink() -> AsyncIterator[MakeSink]:
    """Factory of started Sinks (kwargs as for Sink); all stopped at teardown."""
    started: list[Sink] = []

    async def make(**kwargs: Any) -> Sink:
        server = await Sink(**kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


@pytest.fixture
def sinks() -> Iterator[SinkLoop]:
    """Sinks on a background loop, for tests that drive a real gateway process."""
    loop = SinkLoop()
    yield loop
    loop.close()


@pytest.fixture
def gateway(tmp_path: Path, aiohttp_client: Any) -> GatewayClient:
    """An in-process gateway (real store, real engine) on a test client: gateway(**config)."""

    async def make(**sections: Any) -> TestClient[web.Request, web.Application]:
        config = load_config(write_config(tmp_path, base_config(tmp_path, **sections)))
        client: TestClient[web.Request, web.Application] = await aiohttp_client(create_app(config))
        # webhooks take the listener's direct route, as under `serve`
        runner = client.server.runner
        assert isinstance(runner, web.AppRunner)
        route_webhooks_directly(runner, config.server.path)
        return client

    return make


@pytest.fixture(scope="session")
def cli() -> Iterator[CliServer]:
    """CLI commands in forked children of one process that imported the gateway once."""
    server = CliServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
async def http_client() -> AsyncIterator[HttpClient]:
    """The client the gateway itself delivers with."""
    async with HttpClient() as client:
        yield client


@pytest.fixture
async def harness(tmp_path: Path, http_client: HttpClient) -> AsyncIterator[Harness]:
    """Destinations built from a real config, and every server they talk to."""
    helper = Harness(tmp_path, http_client)
    try:
        yield helper
    finally:
        await helper.close()


@pytest.fixture
async def listener(tmp_path: Path) -> AsyncIterator[tuple[str, list[str]]]:
    """The gateway app behind a real socket with the direct route in front; the list
    collects every request the app's router and middlewares saw."""
    routed: list[str] = []

    @web.middleware
    async def seen(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        routed.append(f"{request.method} {request.rel_url}")
        return await handler(request)

    config = load_config(write_config(tmp_path, base_config(tmp_path)))
    app = create_app(config)
    app.middlewares.append(seen)
    runner = web.AppRunner(app)
    await runner.setup()
    route_webhooks_directly(runner, config.server.path)
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}", routed
    finally:
        await runner.cleanup()

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.config.load import load_config
from gateway.web.app import create_app
from tests.helpers import Sink, base_config, write_config


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    server = await Sink().start()
    yield server
    await server.stop()


@pytest.fixture
async def make_sink() -> AsyncIterator[Callable[..., Awaitable[Sink]]]:
    started: list[Sink] = []

    async def make(**kwargs: Any) -> Sink:
        server = await Sink(**kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


GatewayClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
def gateway(tmp_path: Path, aiohttp_client: Any) -> GatewayClient:
    """An in-process gateway (real store, real engine) on a test client: gateway(**config)."""

    async def make(**sections: Any) -> TestClient[web.Request, web.Application]:
        config_path = write_config(tmp_path, base_config(tmp_path, **sections))
        client: TestClient[web.Request, web.Application] = await aiohttp_client(
            create_app(load_config(config_path))
        )
        return client

    return make

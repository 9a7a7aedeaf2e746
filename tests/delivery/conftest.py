from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.delivery.support import ScriptedSink

MakeSink = Callable[..., Awaitable[ScriptedSink]]


@pytest.fixture
async def scripted() -> AsyncIterator[MakeSink]:
    """Factory of started ScriptedSinks (kwargs as for Sink); all stopped at teardown."""
    started: list[ScriptedSink] = []

    async def make(**kwargs: Any) -> ScriptedSink:
        server = await ScriptedSink(**kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()

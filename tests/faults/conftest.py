from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.support import SinkLoop


@pytest.fixture
def sinks() -> Iterator[SinkLoop]:
    """Sinks on a background loop, for tests that drive a real gateway process."""
    loop = SinkLoop()
    yield loop
    loop.close()

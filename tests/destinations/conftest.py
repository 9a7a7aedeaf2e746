"""Fixtures for destination tests: destinations built from a real YAML config, sent with a
real aiohttp session to real local servers (see servers.py and harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.destinations.harness import Certificates, Harness
from tests.destinations.servers import make_certificate


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    folder = tmp_path_factory.mktemp("certs")
    cert, key = make_certificate(folder, "trusted")
    other_cert, other_key = make_certificate(folder, "untrusted")
    return Certificates(cert, key, other_cert, other_key)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def harness(tmp_path: Path, session: aiohttp.ClientSession) -> AsyncIterator[Harness]:
    helper = Harness(tmp_path, session)
    try:
        yield helper
    finally:
        await helper.close()

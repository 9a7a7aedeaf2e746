"""A real store of either backend, opened: the contract tests run over both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store import Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore


def postgres_store(dsn: str, lease_margin: float = 30.0) -> PostgresStore:
    return PostgresStore(
        dsn, pool_min=1, pool_max=4, connect_timeout=5.0, lease_margin=lease_margin
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = SqliteStore(tmp_path / "contract.db", busy_timeout=0.3)
    else:
        opened = postgres_store(request.getfixturevalue("postgres_dsn"))
    await opened.open()
    yield opened
    await opened.close()

"""Console fixtures: an in-process gateway with its admin app on test clients (fast tests),
and a real Chromium driven by selenium (browser tests)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.config.load import load_config
from gateway.web.app import create_admin_app, create_app
from tests.support.config import base_config, write_config

OPERATOR = "operator-token-5f1c9e"
VIEWER = "viewer-token-2b7d04"
ADMIN = {"tokens": [{"token": OPERATOR, "role": "operator"}, {"token": VIEWER, "role": "viewer"}]}

Client = TestClient[web.Request, web.Application]


@dataclass
class Console:
    webhook: Client
    admin: Client

    async def sign_in(self, token: str) -> None:
        response = await self.admin.post(
            "/sign-in", data={"token": token, "next": "/"}, allow_redirects=False
        )
        assert response.status == 303, await response.text()

    async def csrf(self, path: str = "/playground") -> str:
        html = await (await self.admin.get(path)).text()
        found = re.search(r'name="csrf" value="([^"]+)"', html)
        assert found, html
        return found.group(1)


@pytest.fixture
def console(tmp_path: Path, aiohttp_client: Any) -> Callable[..., Awaitable[Console]]:
    async def make(**sections: Any) -> Console:
        sections.setdefault("admin", ADMIN)
        config_path = write_config(tmp_path, base_config(tmp_path, **sections))
        main = create_app(load_config(config_path))
        webhook: Client = await aiohttp_client(main)
        admin: Client = await aiohttp_client(create_admin_app(main))
        return Console(webhook, admin)

    return make

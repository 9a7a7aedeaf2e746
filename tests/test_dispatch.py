"""The webhook listener's direct route: plain webhook POSTs skip aiohttp's router and
middlewares, everything else keeps the application's own answers. A real listener on
127.0.0.1 and a real store, as `serve` runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.web.dispatch import direct_webhook_route
from tests.support.config import AUTH
from tests.support.payloads import payload
from tests.support.store import event_count

PATH = "/webhooks/idwise"


async def test_a_webhook_post_is_stored_without_the_router(
    listener: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, routed = listener
    body = payload("Finished Journey")
    async with (
        aiohttp.ClientSession() as client,
        client.post(url + PATH, data=body, headers=AUTH) as r,
    ):
        assert r.status == 200
        assert (await r.json())["status"] == "accepted"
    assert routed == []
    assert event_count(tmp_path / "gateway.db") == 1


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        (PATH + "?source=idwise", {}),  # a query string: the router matches the path alone
        (PATH, {"Expect": "100-continue"}),  # the router's expect handler answers 100 first
    ],
)
async def test_other_webhook_posts_take_the_router_and_are_stored(
    listener: tuple[str, list[str]], tmp_path: Path, target: str, headers: dict[str, str]
) -> None:
    url, routed = listener
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            url + target,
            data=payload("Finished Journey"),
            headers={**AUTH, **headers},
            expect100="Expect" in headers,
        ) as r,
    ):
        assert r.status == 200
        assert (await r.json())["status"] == "accepted"
    assert routed == [f"POST {target}"]
    assert event_count(tmp_path / "gateway.db") == 1


@pytest.mark.parametrize(
    ("method", "target", "status", "error"),
    [
        ("GET", PATH, 405, "method_not_allowed"),
        ("PUT", PATH, 405, "method_not_allowed"),
        ("POST", "/webhooks/other", 404, "not_found"),
        ("POST", PATH + "/", 404, "not_found"),
    ],
)
async def test_everything_else_gets_the_apps_json_answers(
    listener: tuple[str, list[str]], method: str, target: str, status: int, error: str
) -> None:
    url, routed = listener
    async with (
        aiohttp.ClientSession() as client,
        client.request(method, url + target, data=b"{}", headers=AUTH) as r,
    ):
        assert r.status == status
        assert (await r.json())["error"] == error
        if status == 405:
            assert r.headers["Allow"] == "POST"
    assert routed == [f"{method} {target}"]


async def test_health_probes_still_answer(listener: tuple[str, list[str]]) -> None:
    url, routed = listener
    async with aiohttp.ClientSession() as client, client.get(url + "/healthz") as r:
        assert r.status == 200
    assert routed == ["GET /healthz"]


async def test_an_error_inside_the_pipeline_is_a_json_500(aiohttp_raw_server: Any) -> None:
    # an app without the gateway's state: the pipeline's first lookup raises
    app = web.Application()

    async def never(request: web.BaseRequest) -> web.StreamResponse:
        raise AssertionError("the webhook POST must not be routed")

    server = await aiohttp_raw_server(direct_webhook_route(app, PATH, never))
    async with (
        aiohttp.ClientSession() as client,
        client.post(server.make_url(PATH), data=b"{}") as r,
    ):
        assert r.status == 500
        assert await r.json() == {
            "status": "error",
            "error": "internal",
            "message": "internal error",
        }

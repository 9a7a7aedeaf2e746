"""The webhook endpoint against a real store (SQLite file) through a real HTTP client."""

import asyncio
import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway import idwise
from gateway.web import lifecycle
from tests.support.config import AUTH, TOKEN
from tests.support.payloads import payload
from tests.support.process import GatewayClient
from tests.support.store import deliveries, event, event_count, events, raw_event

PATH = "/webhooks/idwise"


def stored(tmp_path: Path) -> int:
    """How many events the gateway's store holds."""
    return event_count(tmp_path / "gateway.db")


@pytest.mark.parametrize("event_type", idwise.EVENT_TYPES)
async def test_every_sample_is_accepted_and_stored_verbatim(
    gateway: GatewayClient, tmp_path: Path, event_type: str
) -> None:
    client = await gateway()
    raw = payload(event_type)
    response = await client.post(PATH, data=raw, headers=AUTH)
    assert response.status == 200
    answer = await response.json()
    assert answer["status"] == "accepted"
    db = tmp_path / "gateway.db"
    (listed,) = events(db)
    shown = event(db, listed["dedupe_key"])
    assert raw_event(db, listed["dedupe_key"]) == raw
    assert shown["event_type"] == event_type
    assert shown["dedupe_key"] == answer["eventId"]
    assert shown["journey_key"]
    assert shown["source_ip"] == "127.0.0.1"
    assert TOKEN not in json.dumps(shown["headers"])
    assert shown["headers"]["Authorization"] == "Bearer ****"


async def test_edge_payload_with_unknown_fields_is_accepted(gateway: GatewayClient) -> None:
    client = await gateway()
    raw = (Path(idwise.__file__).parent / "samples" / "edge_unknown_fields.json").read_bytes()
    response = await client.post(PATH, data=raw, headers=AUTH)
    assert response.status == 200


async def test_content_type_is_not_required(gateway: GatewayClient) -> None:
    client = await gateway()
    response = await client.post(
        PATH, data=payload("Finished Journey"), headers={**AUTH, "Content-Type": "text/plain"}
    )
    assert response.status == 200


async def test_duplicate_event_id_answers_duplicate_and_adds_nothing(
    gateway: GatewayClient, tmp_path: Path, sink: Any
) -> None:
    client = await gateway(
        destinations={"hook": {"type": "http", "url": sink.url}},
        rules=[{"name": "all", "to": ["hook"]}],
    )
    first = await client.post(PATH, data=payload("Finished Journey"), headers=AUTH)
    second = await client.post(PATH, data=payload("Finished Journey"), headers=AUTH)
    assert (await first.json())["status"] == "accepted"
    assert (await second.json()) == {
        "status": "duplicate",
        "eventId": "f57e0b0b-24ba-4702-838b-05ed5c88d5b6",
    }
    assert stored(tmp_path) == 1
    assert len(deliveries(tmp_path / "gateway.db")) == 1


async def test_fifty_concurrent_posts_of_one_event_store_exactly_one(
    gateway: GatewayClient, tmp_path: Path
) -> None:
    client = await gateway()
    raw = payload("Finished Journey")
    responses = await asyncio.gather(
        *(client.post(PATH, data=raw, headers=AUTH) for _ in range(50))
    )
    statuses = [r.status for r in responses]
    answers = [(await r.json())["status"] for r in responses]
    assert statuses == [200] * 50
    assert answers.count("accepted") == 1
    assert answers.count("duplicate") == 49
    assert stored(tmp_path) == 1


async def test_legacy_payload_without_event_id_is_deduplicated_by_hash(
    gateway: GatewayClient, tmp_path: Path
) -> None:
    client = await gateway()
    raw = payload("Step Submitted")
    spaced = json.dumps(json.loads(raw), indent=4).encode()
    a = await (await client.post(PATH, data=raw, headers=AUTH)).json()
    b = await (await client.post(PATH, data=spaced, headers=AUTH)).json()
    assert a["status"] == "accepted"
    assert b["status"] == "duplicate"
    assert a["eventId"].startswith("sha256:")


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"\xff\xfe", 400, "invalid_utf8"),
        (b"{", 400, "invalid_json"),
        (b"[]", 400, "not_object"),
        (b'{"body": {}}', 400, "missing_event"),
        (b'{"event": 1, "body": {}}', 400, "missing_event"),
        (b'{"event": "Finished Journey"}', 400, "missing_body"),
        (b'{"event": "Finished Journey", "body": "x"}', 400, "missing_body"),
        (b"", 400, "invalid_json"),
    ],
)
async def test_bad_bodies_get_a_json_4xx_and_nothing_is_stored(
    gateway: GatewayClient, tmp_path: Path, body: bytes, status: int, reason: str
) -> None:
    client = await gateway()
    response = await client.post(PATH, data=body, headers=AUTH)
    assert response.status == status
    answer = await response.json()
    assert answer["error"] == reason
    assert answer["message"]
    assert stored(tmp_path) == 0


async def test_body_over_the_limit_is_413(gateway: GatewayClient, tmp_path: Path) -> None:
    client = await gateway(server={"max_body_bytes": 1024})
    padded = payload(padding="x" * 2000)
    response = await client.post(PATH, data=padded, headers=AUTH)
    assert response.status == 413
    assert (await response.json())["error"] == "too_large"

    async def chunks() -> Any:
        for _ in range(10):
            yield b" " * 200

    response = await client.post(PATH, data=chunks(), headers=AUTH)  # chunked, no Content-Length
    assert response.status == 413
    assert stored(tmp_path) == 0


async def test_compressed_bodies_are_refused(gateway: GatewayClient) -> None:
    client = await gateway()
    response = await client.post(
        PATH, data=b"\x1f\x8b", headers={**AUTH, "Content-Encoding": "gzip"}
    )
    assert response.status == 415


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"Authorization": "Bearer \u00e9"},
    ],
)
async def test_missing_or_wrong_credentials_are_401(
    gateway: GatewayClient, tmp_path: Path, headers: dict[str, str]
) -> None:
    client = await gateway()
    response = await client.post(PATH, data=payload("Finished Journey"), headers=headers)
    assert response.status == 401
    assert stored(tmp_path) == 0


async def test_basic_auth_challenge_and_success(gateway: GatewayClient) -> None:
    client = await gateway(auth={"basic": [{"username": "idwise", "password": "s3cret-pass"}]})
    refused = await client.post(PATH, data=payload("Finished Journey"))
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"].startswith("Basic")
    good = "Basic " + base64.b64encode(b"idwise:s3cret-pass").decode()
    accepted = await client.post(
        PATH, data=payload("Finished Journey"), headers={"Authorization": good}
    )
    assert accepted.status == 200


async def test_custom_header_auth(gateway: GatewayClient) -> None:
    client = await gateway(auth={"headers": [{"name": "X-IDWise-Key", "value": "hdr-secret-1"}]})
    assert (
        await client.post(
            PATH, data=payload("Finished Journey"), headers={"X-IDWise-Key": "hdr-secret-1"}
        )
    ).status == 200
    assert (
        await client.post(
            PATH, data=payload("Finished Step"), headers={"X-IDWise-Key": "hdr-secret-2"}
        )
    ).status == 401


async def test_ip_allowlist_is_403_before_credentials(gateway: GatewayClient) -> None:
    client = await gateway(auth={"bearer": [TOKEN], "allow_ips": ["203.0.113.0/24"]})
    response = await client.post(PATH, data=payload("Finished Journey"), headers={})
    assert response.status == 403
    spoofed = await client.post(
        PATH, data=payload("Finished Journey"), headers={**AUTH, "X-Forwarded-For": "203.0.113.5"}
    )
    assert spoofed.status == 403


async def test_trusted_proxy_forwarded_for_passes_allowlist(gateway: GatewayClient) -> None:
    client = await gateway(
        auth={
            "bearer": [TOKEN],
            "allow_ips": ["203.0.113.0/24"],
            "trusted_proxies": ["127.0.0.0/8"],
        }
    )
    response = await client.post(
        PATH, data=payload("Finished Journey"), headers={**AUTH, "X-Forwarded-For": "203.0.113.5"}
    )
    assert response.status == 200


async def test_wrong_method_and_path_get_json_errors(gateway: GatewayClient) -> None:
    client = await gateway()
    response = await client.get(PATH)
    assert response.status == 405
    assert (await response.json())["status"] == "error"
    missing = await client.post("/elsewhere", data=b"{}")
    assert missing.status == 404
    assert (await missing.json())["status"] == "error"


async def test_health_and_readiness(gateway: GatewayClient) -> None:
    client = await gateway()
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["store"] == "ok"


async def test_locked_database_answers_503_then_recovers(
    gateway: GatewayClient, tmp_path: Path
) -> None:
    client = await gateway()
    # the fault itself: another connection holds the write lock (raw SQL on purpose)
    blocker = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        response = await client.post(PATH, data=payload("Finished Journey"), headers=AUTH)
        assert response.status == 503
        answer = await response.json()
        assert answer["error"] == "store_unavailable"
        assert "Retry-After" in response.headers
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    response = await client.post(PATH, data=payload("Finished Journey"), headers=AUTH)
    assert response.status == 200
    assert (await response.json())["status"] == "accepted"  # the 503'd attempt left nothing behind
    assert stored(tmp_path) == 1


async def test_full_store_answers_503_never_200(gateway: GatewayClient, tmp_path: Path) -> None:
    client = await gateway(storage={"max_size": 200_000})
    statuses = []
    for i in range(400):
        document = idwise.sample("Finished Journey")
        document["body"]["eventId"] = f"evt-{i}"
        document["body"]["padding"] = "x" * 4000
        response = await client.post(PATH, data=json.dumps(document).encode(), headers=AUTH)
        statuses.append(response.status)
        if response.status == 503:
            break
    assert statuses[-1] == 503
    accepted = statuses.count(200)
    assert accepted > 0
    assert stored(tmp_path) == accepted  # every 200 is stored, nothing else


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root ignores file permissions")
async def test_read_only_database_answers_503(gateway: GatewayClient, tmp_path: Path) -> None:
    client = await gateway()
    (tmp_path / "gateway.db").chmod(0o444)
    response = await client.post(PATH, data=payload("Finished Journey"), headers=AUTH)
    assert response.status == 503


async def test_readiness_fails_while_the_store_cannot_be_written(
    gateway: GatewayClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every probe checks the store, instead of sleeping past the readiness cache
    monkeypatch.setattr(lifecycle, "READY_CACHE", 0.0)
    client = await gateway()
    # the fault itself: another connection holds the write lock (raw SQL on purpose)
    blocker = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["store"] == "unwritable"
        assert (await client.get("/healthz")).status == 200  # alive, just not ready
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (await client.get("/readyz")).status == 200

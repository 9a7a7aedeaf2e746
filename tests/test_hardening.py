"""Issue 13 (hardening), in process: a real store (SQLite file) behind a real HTTP client.
The real-process cases (raw sockets, two processes, slow clients) are in
tests/faults/test_hardening.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.config.load import check_config, load_config
from gateway.web.app import create_admin_app, create_app
from tests.support.config import AUTH, base_config, write_config
from tests.support.process import GatewayClient
from tests.support.store import event_count

PATH = "/webhooks/idwise"


def _event(event_id: object) -> bytes:
    return json.dumps({"event": "Finished Journey", "body": {"eventId": event_id}}).encode()


async def test_event_id_number_and_string_are_not_duplicates(
    gateway: GatewayClient, tmp_path: Path
) -> None:
    """Only a string is an eventId: the number 777 is not the string "777" (it used to be
    taken as text, and the second event was dropped as a duplicate of the first)."""
    client = await gateway()
    text = await client.post(PATH, data=_event("777"), headers=AUTH)
    assert await text.json() == {"status": "accepted", "eventId": "777"}
    number = await client.post(PATH, data=_event(777), headers=AUTH)
    answer = await number.json()
    assert answer["status"] == "accepted"
    assert answer["eventId"].startswith("sha256:")  # not an id: the content hash dedupes
    again = await client.post(PATH, data=_event(777), headers=AUTH)
    assert await again.json() == {**answer, "status": "duplicate"}
    assert event_count(tmp_path / "gateway.db") == 2


async def test_admin_token_scheme_is_case_insensitive_and_a_bare_token_is_refused(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    config = load_config(
        write_config(tmp_path, base_config(tmp_path, admin={"token": "adm1n-t0ken"}))
    )
    main = create_app(config)
    admin = await aiohttp_client(create_admin_app(main))

    async def status(authorization: str | None) -> int:
        headers = {} if authorization is None else {"Authorization": authorization}
        response = await admin.get("/metrics", headers=headers)
        return int(response.status)

    for accepted in ("Bearer adm1n-t0ken", "bearer adm1n-t0ken", "BEARER  adm1n-t0ken"):
        assert await status(accepted) == 200, accepted
    for refused in ("adm1n-t0ken", "Basic adm1n-t0ken", "Bearer", "Bearer adm1n", None):
        assert await status(refused) == 401, refused


def test_check_warns_about_non_ascii_credentials(tmp_path: Path) -> None:
    config = base_config(tmp_path, auth={"bearer": ["tökén-0123456789"]})
    _, problems = check_config(write_config(tmp_path, config))
    warnings = [str(p) for p in problems if p.severity == "warning"]
    assert any("auth.bearer[0]" in w and "non-ASCII" in w for w in warnings), warnings
    assert not any("tökén" in str(p) for p in problems)

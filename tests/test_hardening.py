"""Issue 13 (hardening), in process: a real store (SQLite file) behind a real HTTP client.
The real-process cases (raw sockets, two processes, slow clients) are in
tests/faults/test_hardening.py."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
from pathlib import Path
from typing import Any

import pytest

from gateway.config.load import check_config, load_config
from gateway.web.app import create_admin_app, create_app
from gateway.web.connections import fit_to_descriptors
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


# ---- the database file (items 6 and 8) ------------------------------------------------------
def _files(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_deleted_database_answers_503_and_not_ready_never_200(
    gateway: GatewayClient, tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """After the files were removed the gateway went on answering 200 and ready, writing
    into unlinked files: on restart history, pending deliveries and dedupe were gone."""
    client = await gateway()
    first = await client.post(PATH, data=_event("before-delete"), headers=AUTH)
    assert first.status == 200
    db = tmp_path / "gateway.db"
    for path in _files(db):
        path.unlink(missing_ok=True)
    if how == "replaced":
        db.write_bytes(b"")  # same path, another file
    caplog.set_level(logging.ERROR, logger="gateway.store")
    after = await client.post(PATH, data=_event("after-delete"), headers=AUTH)
    assert after.status == 503, await after.text()
    answer = await after.json()
    assert answer["error"] == "store_unavailable" and "deleted" in answer["message"]
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["store"] == "deleted"
    assert any("deleted or replaced" in r.getMessage() for r in caplog.records)
    duplicate = await client.post(PATH, data=_event("before-delete"), headers=AUTH)
    assert duplicate.status == 503  # not even a duplicate can be answered truthfully


async def test_readiness_reports_a_full_store(gateway: GatewayClient, tmp_path: Path) -> None:
    client = await gateway(storage={"max_size": 200_000})
    assert (await client.get("/readyz")).status == 200
    for i in range(400):
        document = {
            "event": "Finished Journey",
            "body": {"eventId": f"full-{i}", "pad": "x" * 4000},
        }
        response = await client.post(PATH, data=json.dumps(document).encode(), headers=AUTH)
        if response.status == 503:
            break
    assert response.status == 503
    await asyncio.sleep(1.1)  # past the readiness cache
    ready = await client.get("/readyz")
    assert ready.status == 503, await ready.text()  # the heartbeat still fits: it was "ready"
    assert (await ready.json())["store"] == "full"


async def test_readiness_reports_a_disk_below_min_free(gateway: GatewayClient) -> None:
    client = await gateway(storage={"min_free": 2**62})
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["store"] == "disk_low"


async def test_database_files_are_private_and_so_is_a_folder_we_create(
    gateway: GatewayClient, tmp_path: Path
) -> None:
    db = tmp_path / "new" / "deeper" / "gateway.db"
    client = await gateway(storage={"path": str(db)})
    assert (await client.post(PATH, data=_event("mode"), headers=AUTH)).status == 200
    for folder in (tmp_path / "new", tmp_path / "new" / "deeper"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for path in _files(db):
        assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.parametrize("writable", ["program", "folder"])
def test_check_warns_about_a_script_writable_by_others(tmp_path: Path, writable: str) -> None:
    folder = tmp_path / "scripts"
    folder.mkdir()
    program = folder / "notify.sh"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    (program if writable == "program" else folder).chmod(0o777)
    config = base_config(
        tmp_path, destinations={"notify": {"type": "script", "command": [str(program)]}}
    )
    config_obj, problems = check_config(write_config(tmp_path, config))
    assert config_obj is not None  # a warning: check still exits 0 (unless --strict)
    warnings = [str(p) for p in problems if p.severity == "warning"]
    assert any(
        "destinations.notify.command[0]" in w and "writable by other users" in w for w in warnings
    ), warnings
    (program if writable == "program" else folder).chmod(0o755)
    _, problems = check_config(write_config(tmp_path, config))
    assert not [p for p in problems if "writable" in p.message]


def test_the_destinations_pools_are_kept_out_of_the_listeners_cap() -> None:
    everything, _ = fit_to_descriptors(10**9)  # as many as the descriptor limit allows
    fewer, warning = fit_to_descriptors(10**9, outbound=300)
    assert fewer == max(16, everything - 300)
    assert warning is not None and "file-descriptor limit" in warning

"""The gateway on PostgreSQL end to end: a webhook in, a delivery out, and every CLI command
that reads or changes the store (events, deliveries, replay incl. --reroute, store copy),
against a real server. The DSN's password never shows in any output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from gateway.store.sqlite import SqliteStore
from tests.store.conftest import postgres_store
from tests.store.test_contract import accept
from tests.support.config import AUTH, base_config, write_config
from tests.support.payloads import payload
from tests.support.postgres import PASSWORD
from tests.support.process import GatewayClient, run_cli
from tests.support.sinks import Sink


def postgres_storage(dsn: str) -> dict[str, Any]:
    return {"backend": "postgres", "dsn": dsn, "pool": {"min": 1, "max": 4}}


def http(url: str) -> dict[str, Any]:
    return {"type": "http", "url": url}


async def test_a_webhook_is_stored_and_delivered_through_postgres(
    gateway: GatewayClient, sink: Sink, postgres_dsn: str
) -> None:
    client = await gateway(
        storage=postgres_storage(postgres_dsn),
        destinations={"svc": http(sink.url)},
        rules=[{"name": "all", "to": ["svc"]}],
    )
    body = payload("Finished Journey", event_id="pg-e2e-1")
    first = await client.post("/webhooks/idwise", data=body, headers=AUTH)
    again = await client.post("/webhooks/idwise", data=body, headers=AUTH)
    assert (first.status, (await first.json())["status"]) == (200, "accepted")
    assert (again.status, (await again.json())["status"]) == (200, "duplicate")
    (received,) = await sink.wait_for(1)
    assert received.body == body
    ready = await client.get("/readyz")
    assert ready.status == 200


def cli(tmp_path: Path, *args: str) -> Any:
    result = run_cli(*args, "-c", str(tmp_path / "config.yaml"))
    assert PASSWORD not in result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout) if "--json" in args else result.stdout


async def test_the_cli_reads_and_replays_a_postgres_store(
    tmp_path: Path, postgres_dsn: str
) -> None:
    config = base_config(
        tmp_path,
        storage=postgres_storage(postgres_dsn),
        destinations={"a": http("http://127.0.0.1:9/a"), "b": http("http://127.0.0.1:9/b")},
        rules=[{"name": "to-a", "to": ["a"]}],
    )
    write_config(tmp_path, config)
    store = postgres_store(postgres_dsn)
    await store.open()
    try:
        await accept(store, "cli-1", "a", journey="j-cli")
    finally:
        await store.close()
    (listed,) = cli(tmp_path, "events", "list", "--json")
    assert listed["dedupe_key"] == "cli-1"
    shown = cli(tmp_path, "events", "show", "cli-1", "--json")
    assert shown["payload"]["body"]["eventId"] == "cli-1"
    (delivery,) = cli(tmp_path, "deliveries", "list", "--json", "--destination", "a")
    assert delivery["status"] == "pending"
    assert "re-queued 1 delivery" in cli(tmp_path, "replay", "--delivery", str(delivery["id"]))
    # --reroute: rules now also send to b; only the new destination is queued
    config["rules"] = [{"name": "to-a-and-b", "to": ["a", "b"]}]
    write_config(tmp_path, config)
    out = cli(tmp_path, "replay", "--reroute", "--event-id", "cli-1")
    assert "1 new delivery(ies) queued" in out
    rows = cli(tmp_path, "deliveries", "list", "--json")
    assert sorted(r["destination"] for r in rows) == ["a", "b"]
    assert "Traceback" not in cli(tmp_path, "deliveries", "show", str(delivery["id"]))


async def test_store_copy_moves_a_sqlite_store_and_is_idempotent(
    tmp_path: Path, postgres_dsn: str
) -> None:
    source = SqliteStore(tmp_path / "old.db")
    await source.open()
    try:
        await accept(source, "copy-1", "a")
        await accept(source, "copy-2", "a", "b")
    finally:
        await source.close()
    args = ("store", "copy", "--from", f"sqlite:{tmp_path / 'old.db'}")
    first = run_cli(*args, "--to", f"postgres:{postgres_dsn}")
    assert first.returncode == 0, first.stderr
    assert "copied 2 events, 3 deliveries" in first.stdout
    # the second time through the config (the DSN stays out of the process list)
    write_config(tmp_path, base_config(tmp_path, storage=postgres_storage(postgres_dsn)))
    second = run_cli(*args, "-c", str(tmp_path / "config.yaml"))
    assert second.returncode == 0, second.stderr
    assert "copied 0 events, 0 deliveries" in second.stdout
    assert "2 events were already there" in second.stdout
    for result in (first, second):
        assert PASSWORD not in result.stdout + result.stderr


def test_check_never_prints_the_dsn_password(tmp_path: Path) -> None:
    (tmp_path / "db-url").write_text(f"postgresql://gateway:{PASSWORD}@db.internal/gateway\n")
    config = base_config(tmp_path)
    config["storage"] = {"backend": "postgres", "dsn": f"${{file:{tmp_path / 'db-url'}}}"}
    config["destinations"] = {"svc": http("http://127.0.0.1:9/")}
    config["rules"] = [{"name": "all", "to": ["svc"], "when": "body.nope == 'x'"}]
    path = write_config(tmp_path, config)
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    loaded = yaml.safe_load(path.read_text())
    assert PASSWORD not in json.dumps(loaded)  # the file holds only the reference

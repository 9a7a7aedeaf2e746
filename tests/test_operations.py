"""Operating a real gateway process: reload, metrics, logs, shutdown, retention."""

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.config import AUTH, TOKEN, base_config, write_config
from tests.support.payloads import payload
from tests.support.process import gateway_process, get, post, run_cli
from tests.support.store import deliveries, event, event_count, stored_keys
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow  # real gateway processes


def script_destination(tmp_path: Path, name: str) -> dict[str, Any]:
    script = tmp_path / f"{name}.sh"
    script.write_text(f'#!/bin/sh\n{{ tr -d "\\n"; echo; }} >> "{tmp_path}/{name}.out"\n')
    script.chmod(0o755)
    return {"type": "script", "command": [str(script)], "timeout": "5s"}


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def deliveries_to(db: Path, destination: str) -> int:
    return len(deliveries(db, destination=destination))


def metric(admin: str, name: str, headers: dict[str, str] | None = None) -> float | None:
    status, body = get(admin + "/metrics", headers)
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_sighup_with_changed_rule_reroutes_new_events(tmp_path: Path) -> None:
    config = base_config(
        tmp_path,
        destinations={
            "a": script_destination(tmp_path, "a"),
            "b": script_destination(tmp_path, "b"),
        },
        rules=[{"name": "to-a", "to": ["a"]}],
    )
    path = write_config(tmp_path, config)
    with gateway_process(path) as gateway:
        assert post(gateway.url, payload("Finished Journey", event_id="before-1"))[0] == 200
        config["rules"] = [{"name": "to-b", "to": ["b"]}]
        write_config(tmp_path, config)
        gateway.signal(signal.SIGHUP)
        wait_until(lambda: gateway.logged("config reloaded"))
        assert post(gateway.url, payload("Finished Journey", event_id="after-1"))[0] == 200
        wait_until(lambda: len(lines(tmp_path / "b.out")) == 1)
        wait_until(lambda: len(lines(tmp_path / "a.out")) == 1)
        assert lines(tmp_path / "a.out")[0]["body"]["eventId"] == "before-1"
        assert lines(tmp_path / "b.out")[0]["body"]["eventId"] == "after-1"
        assert metric(gateway.admin, "idwise_gateway_config_last_reload_successful") == 1.0


def test_invalid_config_on_sighup_keeps_the_old_one(tmp_path: Path) -> None:
    config = base_config(
        tmp_path,
        destinations={"a": script_destination(tmp_path, "a")},
        rules=[{"name": "to-a", "to": ["a"]}],
    )
    path = write_config(tmp_path, config)
    with gateway_process(path) as gateway:
        path.write_text(path.read_text() + "\nbogus_key: 1\n")
        gateway.signal(signal.SIGHUP)
        wait_until(
            lambda: metric(gateway.admin, "idwise_gateway_config_last_reload_successful") == 0.0
        )
        errors = gateway.logged("config reload rejected")
        assert any("bogus_key" in e["problem"] and "config.yaml:" in e["problem"] for e in errors)
        assert post(gateway.url, payload("Finished Journey", event_id="still-routed"))[0] == 200
        wait_until(lambda: len(lines(tmp_path / "a.out")) == 1)


def test_http_reload_answers_with_hash_or_errors(tmp_path: Path) -> None:
    config = base_config(tmp_path, admin={"token": "admin-token-42"})
    path = write_config(tmp_path, config)
    with gateway_process(path) as gateway:
        status, _ = post(gateway.admin + "/-/reload", b"", headers={})
        assert status == 401
        status, answer = post(
            gateway.admin + "/-/reload", b"", headers={"Authorization": "Bearer admin-token-42"}
        )
        assert status == 200
        assert answer["status"] == "ok"
        assert len(answer["config_hash"]) == 64
        assert answer["changed"] is False
        config["rules"] = [{"name": "x", "to": ["nowhere"]}]
        write_config(tmp_path, config)
        status, answer = post(
            gateway.admin + "/-/reload", b"", headers={"Authorization": "Bearer admin-token-42"}
        )
        assert status == 400
        assert any("nowhere" in e for e in answer["errors"])
        assert "admin-token-42" not in json.dumps(answer)
        assert (
            metric(
                gateway.admin,
                "idwise_gateway_config_last_reload_successful",
                {"Authorization": "Bearer admin-token-42"},
            )
            == 0.0
        )


def test_restart_only_changes_are_reported_not_applied(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    path = write_config(tmp_path, config)
    with gateway_process(path) as gateway:
        changed = {**config, "server": {**config["server"], "port": config["server"]["port"] + 1}}
        write_config(tmp_path, changed)
        status, answer = post(gateway.admin + "/-/reload", b"", headers={})
        assert status == 200
        assert answer["restart_needed"] == ["server.host/server.port"]
        assert get(gateway.base + "/healthz")[0] == 200  # still on the old port


def test_watch_reloads_when_rule_file_content_changes(tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "main.yaml").write_text(yaml.safe_dump({"rules": [{"name": "to-a", "to": ["a"]}]}))
    config = base_config(
        tmp_path,
        destinations={
            "a": script_destination(tmp_path, "a"),
            "b": script_destination(tmp_path, "b"),
        },
        rules_files=["rules/*.yaml"],
    )
    path = write_config(tmp_path, config)
    with gateway_process(path, "--watch") as gateway:
        # replace the file the way editors and ConfigMaps do: write elsewhere, rename over
        replacement = tmp_path / "new.yaml"
        replacement.write_text(yaml.safe_dump({"rules": [{"name": "to-b", "to": ["b"]}]}))
        replacement.rename(rules_dir / "main.yaml")
        wait_until(lambda: gateway.logged("config reloaded"), timeout=10)
        assert post(gateway.url, payload("Finished Journey", event_id="watched"))[0] == 200
        wait_until(lambda: len(lines(tmp_path / "b.out")) == 1)


def test_watch_reloads_when_a_secret_file_is_rotated(tmp_path: Path) -> None:
    """A mounted Secret (read with ${file:}) is rotated the way Kubernetes does it: a new
    file renamed over the old one. --watch reloads it; no SIGHUP, no restart."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "token").write_text("first-token-0123456789")
    config = base_config(tmp_path, auth={"bearer": ["${file:secrets/token}"]})
    path = write_config(tmp_path, config)
    body = payload("Finished Step", event_id="rotated-1")
    with gateway_process(path, "--watch") as gateway:
        assert post(gateway.url, body, {"Authorization": "Bearer first-token-0123456789"})[0] == 200
        replacement = tmp_path / "token.new"
        replacement.write_text("second-token-9876543210")
        replacement.rename(secrets / "token")
        wait_until(lambda: gateway.logged("config reloaded"), timeout=10)
        second = {"Authorization": "Bearer second-token-9876543210"}
        assert post(gateway.url, payload("Finished Step", event_id="rotated-2"), second)[0] == 200
        old = {"Authorization": "Bearer first-token-0123456789"}
        assert post(gateway.url, payload("Finished Step", event_id="rotated-3"), old)[0] == 401
        assert "second-token-9876543210" not in gateway.logs()


def test_reload_storm_under_load_answers_every_request(tmp_path: Path) -> None:
    config = base_config(
        tmp_path,
        destinations={"a": script_destination(tmp_path, "a")},
        rules=[{"name": "r", "to": ["a"]}],
    )
    path = write_config(tmp_path, config)
    results: list[int] = []
    with gateway_process(path) as gateway:
        stop = threading.Event()

        def load(worker: int) -> None:
            i = 0
            while not stop.is_set():
                status, _ = post(
                    gateway.url, payload("Finished Step", event_id=f"storm-{worker}-{i}")
                )
                results.append(status)
                i += 1

        threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for _ in range(5):
            for _ in range(20):  # a burst: these collapse into one or two reloads
                gateway.signal(signal.SIGHUP)
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join()
        assert results and set(results) == {200}
        assert event_count(tmp_path / "gateway.db") == len(results)
        reloads = gateway.logged("config reloaded")
        assert 1 <= len(reloads) < 100  # the storm collapsed


def test_sigterm_drains_and_restart_finishes_pending(tmp_path: Path) -> None:
    slow = tmp_path / "slow.sh"
    slow.write_text(
        f'#!/bin/sh\nsleep 0.5\ncat >> "{tmp_path}/slow.out"; echo >> "{tmp_path}/slow.out"\n'
    )
    slow.chmod(0o755)
    config = base_config(
        tmp_path,
        server={"shutdown_grace": "2s"},
        destinations={
            "slow": {
                "type": "script",
                "command": [str(slow)],
                "timeout": "5s",
                "delivery": {"concurrency": 1},
            }
        },
        rules=[{"name": "r", "to": ["slow"]}],
    )
    path = write_config(tmp_path, config)
    with gateway_process(path) as gateway:
        for i in range(12):
            assert (
                post(
                    gateway.url, payload("Finished Step", event_id=f"term-{i}", journeyId=f"j{i}")
                )[0]
                == 200
            )
        time.sleep(0.2)  # the first attempt is in flight
        started = time.monotonic()
        gateway.signal(signal.SIGTERM)
        assert gateway.wait(timeout=15) == 0
        assert time.monotonic() - started < 2 + 3  # within the grace period (plus start-up slack)
        assert gateway.logged("stopped")
    delivered_before = len(lines(tmp_path / "slow.out"))
    assert 1 <= delivered_before < 12
    with gateway_process(path):
        wait_until(lambda: len(lines(tmp_path / "slow.out")) >= 12, timeout=20)
    ids = {entry["body"]["eventId"] for entry in lines(tmp_path / "slow.out")}
    assert ids == {f"term-{i}" for i in range(12)}


def test_draining_gateway_answers_503_and_not_ready(tmp_path: Path) -> None:
    slow = tmp_path / "hang.sh"
    slow.write_text("#!/bin/sh\nsleep 5\n")
    slow.chmod(0o755)
    config = base_config(
        tmp_path,
        server={"shutdown_grace": "3s"},
        destinations={"hang": {"type": "script", "command": [str(slow)], "timeout": "10s"}},
        rules=[{"name": "r", "to": ["hang"]}],
    )
    path = write_config(tmp_path, config)
    with gateway_process(path) as gateway:
        assert post(gateway.url, payload("Finished Step", event_id="drain-1"))[0] == 200
        time.sleep(0.3)
        gateway.signal(signal.SIGTERM)
        time.sleep(0.3)
        status, answer = post(gateway.url, payload("Finished Step", event_id="drain-2"))
        assert status == 503
        assert answer["error"] == "shutting_down"
        assert get(gateway.base + "/readyz")[0] == 503
        assert gateway.wait(timeout=15) == 0
    assert stored_keys(tmp_path / "gateway.db") == {"drain-1"}
    assert deliveries(tmp_path / "gateway.db")[0]["status"] == "pending"


def test_metrics_endpoint_content(tmp_path: Path) -> None:
    config = base_config(
        tmp_path,
        destinations={
            "a": script_destination(tmp_path, "a"),
            # retried an hour later: it stays pending however slowly this machine runs (with
            # the suite's fast backoff it could die of max_attempts before the scrape)
            "down": {
                "type": "http",
                "url": "http://127.0.0.1:9/x",
                "delivery": {"backoff": {"initial": "1h", "max": "1h"}},
            },
        },
        rules=[{"name": "r", "to": ["a", "down"]}],
    )
    path = write_config(tmp_path, config)
    with gateway_process(path) as gateway:
        assert post(gateway.url, payload("Finished Journey"))[0] == 200
        assert post(gateway.url, payload("Finished Journey"))[0] == 200
        assert post(gateway.url, b"[]")[0] == 400
        assert post(gateway.url, payload("Finished Journey"), headers={})[0] == 401
        wait_until(lambda: len(lines(tmp_path / "a.out")) == 1)
        # the script has written its line, but the gateway counts the delivery only once it
        # has reaped the script and recorded the attempt: scrape until it has
        delivered = 'idwise_gateway_deliveries_total{destination="a",outcome="delivered"} 1.0'

        def counted() -> str | None:
            status, body = get(gateway.admin + "/metrics")
            return body.decode() if status == 200 and delivered in body.decode() else None

        text = wait_until(counted, what="the delivery to a counted")
        for expected in (
            'idwise_gateway_webhooks_received_total{event="Finished Journey",outcome="accepted"} 1.0',
            'idwise_gateway_webhooks_received_total{event="Finished Journey",outcome="duplicate"} 1.0',
            'idwise_gateway_requests_rejected_total{reason="not_object"} 1.0',
            'idwise_gateway_requests_rejected_total{reason="unauthorized"} 1.0',
            'idwise_gateway_deliveries_total{destination="a",outcome="delivered"} 1.0',
            'idwise_gateway_deliveries_pending{destination="down"} 1.0',
            "idwise_gateway_delivery_duration_seconds_bucket",
            "idwise_gateway_oldest_pending_delivery_age_seconds",
            "idwise_gateway_config_last_reload_successful 1.0",
            "idwise_gateway_config_last_reload_success_timestamp_seconds",
            "process_resident_memory_bytes",
        ):
            assert expected in text, expected
        assert "f57e0b0b" not in text  # no ids as label values
        assert "127.0.0.1:9" not in text  # no URLs


def test_secrets_never_appear_in_logs(tmp_path: Path) -> None:
    secrets = {
        "bearer": TOKEN,
        "basic": "basic-pass-9f8e7d",
        "header": "header-secret-5a4b3c",
        "slack": "T000/B000/slacksecretpath77",
        "http_auth": "http-bearer-1q2w3e",
        "admin": "admin-secret-0o9i8u",
    }
    config = base_config(
        tmp_path,
        admin={"token": "${ADMIN_SECRET}"},
        auth={
            "bearer": [TOKEN],
            "basic": [{"username": "idwise", "password": secrets["basic"]}],
            "headers": [{"name": "X-Key", "value": secrets["header"]}],
        },
        destinations={
            "slack": {"type": "slack", "url": f"http://127.0.0.1:9/services/{secrets['slack']}"},
            "api": {
                "type": "http",
                "url": "http://127.0.0.1:9/api",
                "headers": {"Authorization": "Bearer ${API_TOKEN}"},
            },
        },
        rules=[{"name": "r", "to": ["slack", "api"]}],
    )
    path = write_config(tmp_path, config)
    env = {"ADMIN_SECRET": secrets["admin"], "API_TOKEN": secrets["http_auth"]}
    with gateway_process(path, env=env) as gateway:
        import base64

        basic = "Basic " + base64.b64encode(f"idwise:{secrets['basic']}".encode()).decode()
        assert post(gateway.url, payload("Finished Journey"), {"Authorization": basic})[0] == 200
        assert post(gateway.url, payload("Finished Step"), {"X-Key": secrets["header"]})[0] == 200
        assert post(gateway.url, payload("AML Monitor Update"), AUTH)[0] == 200
        assert (
            post(
                gateway.url,
                payload("Finished Spot Check"),
                {"Authorization": "Bearer wrong-" + TOKEN},
            )[0]
            == 401
        )
        path.write_text(path.read_text() + "\nnope: 1\n")
        gateway.signal(signal.SIGHUP)
        wait_until(lambda: gateway.logged("config reload rejected"))
        get(gateway.admin + "/metrics", {"Authorization": f"Bearer {secrets['admin']}"})
        time.sleep(0.5)
        wait_until(lambda: len(gateway.logged("delivery attempt")) >= 6)
        gateway.signal(signal.SIGTERM)
        gateway.wait()
        logs = gateway.logs()
    assert "delivery attempt" in logs
    for name, value in secrets.items():
        assert value not in logs, f"{name} secret leaked into logs"
    db = tmp_path / "gateway.db"
    for key in stored_keys(db):
        stored = json.dumps(event(db, key)["headers"])
        for value in secrets.values():
            assert value not in stored


def test_retention_prunes_old_finished_events_only(tmp_path: Path) -> None:
    import asyncio

    from gateway.config.load import load_config
    from gateway.retention import prune_once

    config = base_config(tmp_path, storage={"retention": "1h"})
    path = write_config(tmp_path, config)
    db = tmp_path / "gateway.db"

    async def scenario() -> int:
        from gateway.events import parse_event
        from gateway.store import AttemptRecord
        from gateway.store.sqlite import SqliteStore

        store = SqliteStore(db)
        await store.open()
        old = time.time() - 7200
        finished = []
        for i in range(1200):  # more than one batch
            old_event = parse_event(payload("Finished Step", event_id=f"old-{i}"))
            accepted = await store.accept(
                old_event, [("gone", "r")] if i == 0 else [], ["r"], None, {}, received_at=old
            )
            finished += accepted.delivery_ids
        await store.accept(
            parse_event(payload("Finished Step", event_id="fresh")), [], [], None, {}
        )
        await store.record(
            [AttemptRecord(d, 1, old, 0.0, "delivered", status_code=200) for d in finished]
        )
        # one old event keeps a pending delivery: it must survive
        await store.accept(
            parse_event(payload("Finished Step", event_id="old-pending")),
            [("gone", "r")],
            [],
            None,
            {},
            received_at=old,
        )
        await store.close()
        retention = load_config(path).storage.retention
        store = SqliteStore(db)
        await store.open()
        try:
            return await prune_once(store, retention)
        finally:
            await store.close()

    removed = asyncio.run(scenario())
    assert removed == 1200
    assert stored_keys(db) == {"fresh", "old-pending"}
    assert len(deliveries(db)) == 1


def test_removed_destination_keeps_its_deliveries_until_it_comes_back(tmp_path: Path) -> None:
    config = base_config(
        tmp_path,
        destinations={
            "a": script_destination(tmp_path, "a"),
            "gone": script_destination(tmp_path, "gone"),
        },
        rules=[{"name": "to-a", "to": ["a"]}],
    )
    failing = tmp_path / "fail.sh"
    failing.write_text("#!/bin/sh\nexit 75\n")  # EX_TEMPFAIL: retry later
    failing.chmod(0o755)
    config["destinations"]["gone"] = {
        "type": "script",
        "command": [str(failing)],
        "delivery": {"backoff": {"initial": "200ms", "max": "200ms"}, "max_attempts": 1000},
    }
    config["rules"] = [{"name": "to-gone", "to": ["gone"]}]
    path = write_config(tmp_path, config)
    db = tmp_path / "gateway.db"
    with gateway_process(path) as gateway:
        assert post(gateway.url, payload("Finished Journey", event_id="orphan-1"))[0] == 200
        wait_until(lambda: len(gateway.logged("delivery attempt")) >= 1)
        # the destination disappears from the config
        removed = {**config, "destinations": {"a": config["destinations"]["a"]}, "rules": []}
        write_config(tmp_path, removed)
        gateway.signal(signal.SIGHUP)
        wait_until(lambda: bool(gateway.logged("config reloaded")))
        time.sleep(1.5)
        status = [d["status"] for d in deliveries(db, destination="gone")]
        assert status == ["pending"]  # kept and visible, not dead, not dropped
        listed = run_cli("deliveries", "list", "-c", str(path), "--json", "--destination", "gone")
        assert [row["status"] for row in json.loads(listed.stdout)] == ["pending"]
        # it comes back, healthy this time: the queued delivery resumes
        back = {
            **config,
            "destinations": {
                **removed["destinations"],
                "gone": script_destination(tmp_path, "gone"),
            },
        }
        write_config(tmp_path, back)
        gateway.signal(signal.SIGHUP)
        wait_until(lambda: len(lines(tmp_path / "gone.out")) == 1, timeout=10)
    assert lines(tmp_path / "gone.out")[0]["body"]["eventId"] == "orphan-1"

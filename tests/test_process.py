"""The real `idwise-gateway serve` process: crash safety and the CLI beside it."""

import json
import signal
import threading
from pathlib import Path

import pytest

from gateway import idwise
from tests.support.config import AUTH, base_config, write_config
from tests.support.payloads import payload
from tests.support.process import gateway_process, post, run_cli
from tests.support.store import stored_keys

pytestmark = pytest.mark.slow  # real gateway processes


@pytest.mark.parametrize("durability", ["full", "process"])
def test_sigkill_loses_no_acknowledged_event(tmp_path: Path, durability: str) -> None:
    """Both durability settings keep every 200 through a kill -9 of the gateway (`process`
    gives up only power-loss safety: the WAL is in the OS's hands at each commit)."""
    storage = {"durability": durability}
    config = write_config(tmp_path, base_config(tmp_path, storage=storage))
    acknowledged: list[str] = []
    stop = threading.Event()

    with gateway_process(config) as gateway:

        def poster(worker: int) -> None:
            i = 0
            while not stop.is_set():
                document = idwise.sample("Finished Journey")
                document["body"]["eventId"] = f"kill-{worker}-{i}"
                i += 1
                try:
                    status, answer = post(gateway.url, json.dumps(document).encode(), timeout=5)
                except OSError:
                    continue  # the process is gone: no answer, no promise
                if status == 200:
                    acknowledged.append(answer["eventId"])

        threads = [threading.Thread(target=poster, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        while len(acknowledged) < 150:
            threading.Event().wait(0.01)
        gateway.signal(signal.SIGKILL)
        gateway.wait()
        stop.set()
        for thread in threads:
            thread.join()

    with gateway_process(config) as restarted:
        stored = stored_keys(tmp_path / "gateway.db")
        missing = set(acknowledged) - stored
        assert not missing, f"{len(missing)} acknowledged events lost"
        # and the restarted gateway still answers duplicates for them
        status, answer = post(
            restarted.url,
            json.dumps(
                {"event": "Finished Journey", "body": {"eventId": acknowledged[0]}}
            ).encode(),
        )
        assert status == 200
        assert answer["status"] == "duplicate"


def test_cli_reads_the_store_while_serve_runs(tmp_path: Path) -> None:
    config = write_config(tmp_path, base_config(tmp_path))
    with gateway_process(config) as gateway:
        for event_type in ("Finished Journey", "AML Monitor Update", "Finished Spot Check"):
            assert post(gateway.url, payload(event_type), AUTH)[0] == 200
        listed = run_cli("events", "list", "-c", str(config), "--json")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert [r["event_type"] for r in rows] == [
            "Finished Spot Check",
            "AML Monitor Update",
            "Finished Journey",
        ]
        filtered = json.loads(
            run_cli(
                "events", "list", "-c", str(config), "--json", "--type", "AML Monitor Update"
            ).stdout
        )
        assert len(filtered) == 1
        table = run_cli("events", "list", "-c", str(config))
        assert "Finished Spot Check" in table.stdout
        event_id = "f57e0b0b-24ba-4702-838b-05ed5c88d5b6"
        shown = run_cli("events", "show", "-c", str(config), event_id, "--json")
        assert shown.returncode == 0
        assert json.loads(shown.stdout)["payload"]["event"] == "Finished Journey"
        by_journey = json.loads(
            run_cli(
                "events",
                "list",
                "-c",
                str(config),
                "--json",
                "--journey",
                "65ee4c1d9a2b7f3e81d700ca",
            ).stdout
        )
        assert [r["event_type"] for r in by_journey] == ["Finished Spot Check"]


def test_sample_lists_and_prints_every_type() -> None:
    listed = run_cli("sample")  # each type, and its variants where it has some
    assert [line.split("  ")[0] for line in listed.stdout.splitlines()] == list(idwise.EVENT_TYPES)
    for event_type in idwise.EVENT_TYPES:
        printed = run_cli("sample", event_type)
        assert json.loads(printed.stdout)["event"] == event_type
    assert run_cli("sample", "finished_journey").returncode == 0
    assert run_cli("sample", "No Such Thing").returncode == 1

"""The CLI against a real `serve` process on the same database: `send` with the config's
credentials, the readable `events show` / `deliveries show`, and what `replay` says."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.config import base_config, write_config
from tests.support.process import CliServer, GatewayProcess, gateway_process
from tests.support.store import deliveries
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def running(tmp_path: Path) -> Iterator[GatewayProcess]:
    """A gateway whose `ok` destination always succeeds and `broken` one always fails
    permanently (so it is dead after one attempt), both real scripts."""
    document = base_config(
        tmp_path,
        destinations={
            "ok": {"type": "script", "command": ["/bin/true"]},
            "broken": {"type": "script", "command": ["/bin/false"]},
        },
        rules=[
            {"name": "all", "to": ["ok"]},
            {
                "name": "refer",
                "when": "body.systemDecision == 'Refer'",
                "to": ["broken"],
            },
        ],
    )
    with gateway_process(write_config(tmp_path, document)) as gateway:
        yield gateway


def statuses(gateway: GatewayProcess) -> list[tuple[str, str]]:
    db = Path(gateway.config["storage"]["path"])
    found = sorted(deliveries(db), key=lambda d: d["id"])
    return [(str(d["destination"]), str(d["status"])) for d in found]


def test_send_posts_a_fresh_sample_with_the_configs_credentials(
    cli: CliServer, running: GatewayProcess
) -> None:
    config = str(running.config_path)
    first = cli.run("send", "-c", config, "--sample", "Finished Journey")
    assert first.returncode == 0, first.stderr
    assert re.fullmatch(
        r'HTTP 200 \{"status":"accepted","eventId":"[0-9a-f-]{36}"\}\n', first.stdout
    )
    again = cli.run("send", "-c", config, "--sample", "Finished Journey")
    assert '"accepted"' in again.stdout  # a fresh eventId: never a duplicate by accident
    fixed = [
        cli.run("send", "-c", config, "--sample", "Finished Step", "--set", "body.eventId=x-1")
    ]
    fixed.append(
        cli.run("send", "-c", config, "--sample", "Finished Step", "--set", "body.eventId=x-1")
    )
    assert '"duplicate"' in fixed[1].stdout
    raw = b'{"event": "Finished Step", "body": {"eventId": "from-stdin-1"}}'
    piped = cli.run("send", "-c", config, "-", stdin=raw)
    assert piped.stdout == 'HTTP 200 {"status":"accepted","eventId":"from-stdin-1"}\n'
    refused = cli.run("send", "-c", config, "-", stdin=b'{"event": 1}')
    assert refused.returncode == 1
    assert refused.stdout.startswith("HTTP 400 ")


def test_send_to_a_gateway_that_is_not_there_is_one_line(cli: CliServer, tmp_path: Path) -> None:
    path = write_config(tmp_path, base_config(tmp_path))
    result = cli.run("send", "-c", str(path), "--sample", "Finished Step")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("idwise-gateway: cannot reach the gateway at http://127.0.0.1:")


def test_readable_shows_and_the_original_queued_time_after_a_replay(
    cli: CliServer, running: GatewayProcess
) -> None:
    config = str(running.config_path)
    sent = cli.run(
        "send",
        "-c",
        config,
        "--sample",
        "Finished Journey",
        "--variant",
        "refer",
        "--set",
        "body.eventId=show-1",
    )
    assert sent.returncode == 0, sent.stderr
    wait_until(lambda: sorted(statuses(running)) == [("broken", "dead"), ("ok", "delivered")])

    event = cli.run("events", "show", "-c", config, "show-1")
    assert event.returncode == 0, event.stderr
    assert event.stdout.startswith("event 1: Finished Journey\n")
    assert re.search(
        r"received: +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} \(\d+s ago\)", event.stdout
    )
    assert '"eventId": "show-1"' in event.stdout  # the payload, pretty
    assert re.search(r"^2 +broken +dead +1 ", event.stdout, re.M)

    dead = 2
    before = cli.run("deliveries", "show", "-c", config, str(dead))
    assert before.stdout.startswith("delivery 2: Finished Journey -> broken\n")
    assert "replayed:" not in before.stdout
    assert re.search(r"^1 +\S+ \S+ \S+ \(\d+s ago\) +\d+ ms +dead +exit_1 ", before.stdout, re.M)
    queued = json.loads(cli.run("deliveries", "show", "-c", config, str(dead), "--json").stdout)

    replayed = cli.run("replay", "-c", config, "--dead")
    assert replayed.stdout == "re-queued 1 delivery(ies): broken (1)\n"
    wait_until(lambda: ("broken", "dead") in statuses(running))
    wait_until(
        lambda: (
            len(
                json.loads(cli.run("deliveries", "show", "-c", config, "2", "--json").stdout)[
                    "attempt_history"
                ]
            )
            == 2
        )
    )
    after = cli.run("deliveries", "show", "-c", config, str(dead))
    assert "replayed:" in after.stdout
    shown = json.loads(cli.run("deliveries", "show", "-c", config, str(dead), "--json").stdout)
    assert shown["first_queued_at"] == queued["queued_at"]  # the original stays visible
    assert shown["queued_at"] > queued["queued_at"]
    assert [a["number"] for a in shown["attempt_history"]] == [1, 2]


def test_replay_reports_what_it_queued_and_refuses_unknown_ids(
    cli: CliServer, running: GatewayProcess
) -> None:
    config = str(running.config_path)
    for n in (1, 2):
        cli.run(
            "send",
            "-c",
            config,
            "--sample",
            "Finished Journey",
            "--variant",
            "refer",
            "--set",
            f"body.eventId=r-{n}",
        )
    wait_until(lambda: statuses(running).count(("broken", "dead")) == 2)

    for args, message in (
        (("--delivery", "999"), "idwise-gateway: no delivery 999\n"),
        (
            ("--event-id", "nope"),
            "idwise-gateway: no event nope (give a row id, an eventId or a dedupe key)\n",
        ),
        (
            ("--reroute", "--event-id", "nope"),
            "idwise-gateway: no event nope (give a row id, an eventId or a dedupe key)\n",
        ),
    ):
        result = cli.run("replay", "-c", config, *args)
        assert (result.returncode, result.stderr) == (1, message)

    everything = cli.run("replay", "-c", config, "--event-id", "r-1", "--json")
    report = json.loads(everything.stdout)
    assert report["queued"] == 2 and report["destinations"] == {"broken": 1, "ok": 1}
    assert {d["destination"] for d in report["deliveries"]} == {"broken", "ok"}
    nothing = cli.run("replay", "-c", config, "--dead", "--destination", "ok")
    assert nothing.stdout == "re-queued 0 delivery(ies): nothing matched\n"

    rerouted = cli.run("replay", "-c", config, "--reroute", "--since", "1h")
    assert rerouted.stdout == "rerouted 2 event(s): 0 new delivery(ies) queued\n"

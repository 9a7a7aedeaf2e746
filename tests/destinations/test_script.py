"""Script destination: real /bin/sh programs written into tmp_path, run by the destination."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from gateway.destinations.base import Sent
from gateway.errors import PermanentDeliveryError, RetryableDeliveryError
from tests.support.destinations import Harness
from tests.support.payloads import payload
from tests.support.process import is_alive, wait_dead

pytestmark = pytest.mark.timeout(15)

GATEWAY_SECRET = "gw-own-secret-5d1f0c9a"


def read_pids(path: Path, timeout: float = 3.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text()
            if text.endswith("\n"):
                return [int(part) for part in text.split()]
        time.sleep(0.02)
    raise AssertionError(f"{path} was not written")


def pwned_files(folder: Path) -> list[Path]:
    return list(folder.glob("pwned*"))


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------- inputs
async def test_argv_is_passed_literally_never_through_a_shell(
    harness: Harness, tmp_path: Path
) -> None:
    out = tmp_path / "args.bin"
    script = harness.script("args.sh", f"printf '%s\\0' \"$@\" > '{out}'\n")
    arguments = [
        "--verbose",
        f"; touch {tmp_path}/pwned",
        f"$(touch {tmp_path}/pwned2)",
        f"`touch {tmp_path}/pwned3`",
        "two words",
        "*",
        "| cat /etc/passwd",
        "",
    ]
    destination = harness.destination({"type": "script", "command": [str(script), *arguments]})
    result = await harness.send(destination, payload("Finished Journey"))
    assert isinstance(result, Sent)
    assert out.read_bytes().split(b"\0")[:-1] == [a.encode() for a in arguments]
    assert pwned_files(tmp_path) == []


async def test_stdin_is_the_original_body_byte_for_byte(harness: Harness, tmp_path: Path) -> None:
    raw = (
        b'{ "event" :"Finished Journey",\n\t"body": {"eventId":"stdin-1",  "journeyId": "j-1",'
        b' "referenceNo":"caf\xc3\xa9 \\u00e9", "n": 1.50}   }\r\n'
    )
    out = tmp_path / "stdin.bin"
    script = harness.script("stdin.sh", f"cat > '{out}'\n")
    destination = harness.destination({"type": "script", "command": [str(script)]})
    await harness.send(destination, raw)
    assert out.read_bytes() == raw


async def test_environment_is_minimal_and_never_the_gateways(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_SECRET_XYZ", GATEWAY_SECRET)
    monkeypatch.setenv("IDWISE_BASIC_PASSWORD", GATEWAY_SECRET + "-basic")
    out = tmp_path / "environ.bin"
    # /proc/$$/environ is exactly what exec() received, before the shell adds anything
    script = harness.script("env.sh", f"cat /proc/$$/environ > '{out}'\n")
    destination = harness.destination(
        {
            "type": "script",
            "command": [str(script)],
            "env": {
                "NOTIFY_CHANNEL": "kyc-renewals-team",
                "REF_LABEL": "ref-{{ body.referenceNo }}",
                "DECISION": "{{ body.systemDecision }}",
            },
        }
    )
    await harness.send(destination, payload("Finished Journey"))
    blob = out.read_bytes()
    assert GATEWAY_SECRET.encode() not in blob
    environ = dict(item.split("=", 1) for item in blob.decode().split("\0") if item)
    assert set(environ) == {
        "PATH",
        "LANG",
        "HOME",
        "IDWISE_EVENT",
        "IDWISE_EVENT_ID",
        "IDWISE_JOURNEY_ID",
        "IDWISE_REFERENCE_NO",
        "NOTIFY_CHANNEL",
        "REF_LABEL",
        "DECISION",
    }
    assert environ["IDWISE_EVENT"] == "Finished Journey"
    assert environ["IDWISE_EVENT_ID"] == "f57e0b0b-24ba-4702-838b-05ed5c88d5b6"
    assert environ["IDWISE_JOURNEY_ID"] == "6720b9f3a41c5e0d8f7a122e"
    assert environ["IDWISE_REFERENCE_NO"] == "8400193726523"
    assert environ["NOTIFY_CHANNEL"] == "kyc-renewals-team"
    assert environ["REF_LABEL"] == "ref-8400193726523"
    assert environ["DECISION"] == "Complete"
    assert environ["PATH"] and environ["HOME"] and environ["LANG"]


async def test_single_placeholder_env_with_structured_value_is_json_text(
    harness: Harness, tmp_path: Path
) -> None:
    out = tmp_path / "steps"
    script = harness.script("steps.sh", f'printf "%s\\n%s\\n" "$STEPS" "$UNREVIEWED" > \'{out}\'\n')
    destination = harness.destination(
        {
            "type": "script",
            "command": [str(script)],
            "env": {
                "STEPS": "{{ body.requiredSteps }}",
                "UNREVIEWED": "{{ body.manualDecision == null }}",
            },
        }
    )
    await harness.send(destination, payload("Verification Update Required"))
    steps, unreviewed = out.read_text().splitlines()
    assert json.loads(steps) == [{"stepId": "0", "reasonCode": "DOCUMENT_EXPIRING"}]
    assert unreviewed == "true"


async def test_program_not_found_is_permanent(harness: Harness) -> None:
    destination = harness.destination(
        {"type": "script", "command": ["idwise-no-such-program-4711"]}
    )
    error = await harness.fail(destination, payload("Finished Journey"), PermanentDeliveryError)
    assert error.reason == "script_not_found"


# ------------------------------------------------------------------------------ exit codes
@pytest.mark.parametrize(
    ("body", "expected", "reason"),
    [
        ("exit 0", Sent, None),
        ("exit 75", RetryableDeliveryError, "exit_75"),
        ("exit 1", PermanentDeliveryError, "exit_1"),
        ("exit 2", PermanentDeliveryError, "exit_2"),
        ("exit 3", PermanentDeliveryError, "exit_3"),
        ("kill -KILL $$", RetryableDeliveryError, "script_signal"),
        ("kill -TERM $$", RetryableDeliveryError, "script_signal"),
        ("kill -SEGV $$", RetryableDeliveryError, "script_signal"),
    ],
    ids=["0", "75", "1", "2", "3", "sigkill", "sigterm", "sigsegv"],
)
async def test_exit_status_classification(
    harness: Harness, body: str, expected: type, reason: str | None
) -> None:
    script = harness.script("exit.sh", f"cat > /dev/null\n{body}\n")
    # not about timeouts: a generous one, so a busy machine cannot turn an exit into a timeout
    destination = harness.destination(
        {"type": "script", "command": [str(script)], "timeout": "30s"}
    )
    if expected is Sent:
        assert isinstance(await harness.send(destination, payload("Finished Journey")), Sent)
    else:
        error = await harness.fail(destination, payload("Finished Journey"), expected)
        assert error.reason == reason


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (3, RetryableDeliveryError),
        (75, RetryableDeliveryError),
        (1, PermanentDeliveryError),
        (4, PermanentDeliveryError),
    ],
)
async def test_retry_exit_codes_are_configurable(
    harness: Harness, code: int, expected: type
) -> None:
    script = harness.script("exit.sh", f'exit "{code}"\n')
    destination = harness.destination(
        {"type": "script", "command": [str(script)], "retry_exit_codes": [3]}
    )
    error = await harness.fail(destination, payload("Finished Journey"), expected)
    assert error.reason == f"exit_{code}"


# --------------------------------------------------------------------------------- output
async def test_output_is_captured_on_success(harness: Harness) -> None:
    script = harness.script("talk.sh", "echo 'to-stdout-31'\necho 'to-stderr-32' >&2\n")
    destination = harness.destination({"type": "script", "command": [str(script)]})
    result = await harness.send(destination, payload("Finished Journey"))
    assert result.output is not None
    assert "to-stdout-31" in result.output
    assert "to-stderr-32" in result.output


async def test_output_is_captured_on_failure(harness: Harness) -> None:
    script = harness.script(
        "fail.sh", "echo \"processing $IDWISE_REFERENCE_NO\"\necho 'upstream down' >&2\nexit 75\n"
    )
    destination = harness.destination({"type": "script", "command": [str(script)]})
    error = await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)
    assert error.output is not None
    assert "processing 8400193726523" in error.output
    assert "upstream down" in error.output


async def test_output_is_bounded_and_drained(harness: Harness) -> None:
    # 1 MB on each stream: far beyond a pipe buffer, so the program blocks unless drained
    script = harness.script(
        "loud.sh",
        "head -c 1000000 /dev/zero | tr '\\0' o\nhead -c 1000000 /dev/zero | tr '\\0' e >&2\nexit 1\n",
    )
    destination = harness.destination({"type": "script", "command": [str(script)], "timeout": "5s"})
    error, elapsed = await harness.timed_fail(
        destination, payload("Finished Journey"), PermanentDeliveryError
    )
    assert error.reason == "exit_1"
    assert elapsed < 4
    assert error.output is not None
    assert "oooo" in error.output and "eeee" in error.output
    assert len(error.output) <= 2 * 4096 + 100


# -------------------------------------------------------------------------------- timeout
async def test_timeout_kills_the_whole_process_group(harness: Harness, tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    # the script and its child both ignore SIGTERM: only a group SIGKILL ends them
    script = harness.script(
        "stubborn.sh",
        f"trap '' TERM\nsleep 30 &\necho \"$$ $!\" > '{pids_file}'\nwhile :; do wait; done\n",
    )
    destination = harness.destination(
        {"type": "script", "command": [str(script)], "timeout": "500ms"}
    )
    try:
        error, elapsed = await harness.timed_fail(
            destination, payload("Finished Journey"), RetryableDeliveryError
        )
        pids = read_pids(pids_file)
        assert len(pids) == 2
        assert error.reason == "timeout"
        assert elapsed < 3.0
        assert wait_dead(pids, 1.0) == [], "script or its child survived the timeout"
    finally:
        if pids_file.exists():
            kill_all([int(p) for p in pids_file.read_text().split()])


async def test_timeout_output_is_kept(harness: Harness) -> None:
    script = harness.script("slow.sh", "echo 'started work'\nsleep 30\n")
    destination = harness.destination(
        {"type": "script", "command": [str(script)], "timeout": "300ms"}
    )
    error, elapsed = await harness.timed_fail(
        destination, payload("Finished Journey"), RetryableDeliveryError
    )
    assert error.reason == "timeout"
    assert elapsed < 2.0
    assert error.output is not None and "started work" in error.output


async def test_exit_0_with_a_background_child_holding_the_pipes_is_success(
    harness: Harness, tmp_path: Path
) -> None:
    pids_file = tmp_path / "pids"
    script = harness.script(
        "leaves-child.sh",
        f"sleep 30 &\necho \"$!\" > '{pids_file}'\necho done\nsleep 0.1\nexit 0\n",
    )
    destination = harness.destination(
        {"type": "script", "command": [str(script)], "timeout": "500ms"}
    )
    started = time.monotonic()
    try:
        result = await harness.send(destination, payload("Finished Journey"))
        assert time.monotonic() - started < 2.5
        assert isinstance(result, Sent)
        pids = read_pids(pids_file)
        assert wait_dead(pids, 1.0) == []
    finally:
        if pids_file.exists():
            kill_all([int(p) for p in pids_file.read_text().split()])


def test_is_alive_sees_a_live_process() -> None:
    # the liveness check used above must be able to say "alive"
    assert is_alive(os.getpid())


async def test_event_variables_for_a_payload_without_event_id(
    harness: Harness, tmp_path: Path
) -> None:
    out = tmp_path / "vars"
    script = harness.script(
        "vars.sh",
        f'printf "%s|%s|%s|%s\\n" "$IDWISE_EVENT" "$IDWISE_EVENT_ID" "$IDWISE_JOURNEY_ID" "$IDWISE_REFERENCE_NO" > \'{out}\'\n',
    )
    destination = harness.destination({"type": "script", "command": [str(script)]})
    raw = payload("Finished Ongoing Check")  # carries no eventId
    await harness.send(destination, raw)
    event, event_id, journey, reference = out.read_text().rstrip("\n").split("|")
    body = json.loads(raw)["body"]
    assert (event, journey, reference) == (
        "Finished Ongoing Check",
        body["journeyId"],
        body["referenceNo"],
    )
    assert event_id  # some stable id is always given


@pytest.mark.slow
def test_a_program_that_never_reads_its_input_is_delivered_at_once_in_a_real_gateway(
    tmp_path: Path,
) -> None:
    """`serve` runs on uvloop, which raises on a write to the pipe of a program that already
    exited without reading it (/bin/true): that must be a delivery, not an internal error
    and a retry."""
    from tests.support.config import AUTH, base_config, write_config
    from tests.support.process import gateway_process, post
    from tests.support.store import attempts
    from tests.support.waiting import wait_until

    config = base_config(
        tmp_path,
        destinations={"quick": {"type": "script", "command": ["/bin/true"]}},
        rules=[{"name": "all", "to": ["quick"]}],
    )
    db = tmp_path / "gateway.db"
    with gateway_process(write_config(tmp_path, config)) as gateway:
        for n in range(5):  # the exit often beats the write; five make it near certain
            raw = json.dumps({"event": "Finished Step", "body": {"eventId": f"q-{n}"}}).encode()
            assert post(gateway.url, raw, AUTH)[0] == 200
        wait_until(lambda: len(attempts(db)) >= 5)
        found = [(outcome, reason) for _, outcome, reason, _ in attempts(db)]
    assert found == [("delivered", None)] * 5, gateway.logs()

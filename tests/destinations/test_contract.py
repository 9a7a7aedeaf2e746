"""One contract for every destination type, each against its own real local server:
success -> Sent and the event arrived; retryable failure -> RetryableDeliveryError;
permanent failure -> PermanentDeliveryError; no answer in time -> retryable `timeout`,
within the configured time."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from gateway.destinations import REGISTRY
from gateway.destinations.base import Destination, Sent
from gateway.errors import DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from tests.support.destinations import Harness
from tests.support.payloads import payload
from tests.support.smtp import Recorder, RefuseData, StallData
from tests.support.tls import Certificates

pytestmark = pytest.mark.timeout(15)

RAW = payload("Finished Journey")
REFERENCE = b"8400193726523"  # in every rendering of RAW: default Slack text, mail, bytes
TIMEOUT = 0.4
KINDS = ["slack", "http", "email", "script"]
OUTCOMES = ["success", "retryable", "permanent", "timeout"]


@dataclass
class Scenario:
    destination: Destination
    arrived: Callable[[], list[bytes]]  # what the far side got (request, mail, program stdin)
    attempts: Callable[[], int]  # how often the far side was contacted for it


async def slack(harness: Harness, certificates: Certificates, outcome: str) -> Scenario:
    server = await harness.slack(delay=5.0 if outcome == "timeout" else 0.0)
    if outcome == "retryable":
        server.answer(503, "service_unavailable")
    elif outcome == "permanent":
        server.answer(404, "channel_not_found")
    destination = harness.destination(
        {"type": "slack", "url": server.url}, delivery={"timeout": TIMEOUT}
    )
    return Scenario(
        destination, lambda: [r.body for r in server.received], lambda: len(server.received)
    )


async def http(harness: Harness, certificates: Certificates, outcome: str) -> Scenario:
    responses = {"retryable": [503], "permanent": [422]}.get(outcome, [])
    sink = await harness.sink(
        responses=responses,
        delay=5.0 if outcome == "timeout" else 0.0,
        cancel_on_disconnect=True,  # the stalled answer ends when the client gives up
    )
    destination = harness.destination(
        {"type": "http", "url": sink.url}, delivery={"timeout": TIMEOUT}
    )
    return Scenario(
        destination, lambda: [r.body for r in sink.received], lambda: len(sink.received)
    )


async def email(harness: Harness, certificates: Certificates, outcome: str) -> Scenario:
    handler: Recorder = {
        "success": Recorder(),
        "retryable": RefuseData("451 4.3.0 try again later"),
        "permanent": RefuseData("550 5.7.1 refused"),
        "timeout": StallData(3.0),
    }[outcome]
    server = harness.smtp(handler, starttls=certificates.server_context())
    destination = harness.destination(
        {
            "type": "email",
            "host": "127.0.0.1",
            "port": server.port,
            "security": "starttls",
            "ca_file": str(certificates.cert),
            "from": "gateway@bank.test",
            "to": ["compliance@bank.test"],
        },
        delivery={"timeout": TIMEOUT},
    )
    return Scenario(
        destination,
        lambda: [d.content for d in server.delivered],
        lambda: len(server.handler.rcpt_seen),
    )


async def script(harness: Harness, certificates: Certificates, outcome: str) -> Scenario:
    inbox = harness.folder("inbox")
    ending = {"success": "exit 0", "retryable": "exit 75", "permanent": "exit 1"}.get(
        outcome, "sleep 30"
    )
    program = harness.script("deliver.sh", f"cat > '{inbox}/event-$$.json'\n{ending}\n")
    destination = harness.destination(
        {"type": "script", "command": [str(program)], "timeout": TIMEOUT}
    )

    def arrived() -> list[bytes]:
        return [path.read_bytes() for path in inbox.iterdir()]

    return Scenario(destination, arrived, lambda: len(arrived()))


SETUPS = {"slack": slack, "http": http, "email": email, "script": script}


def test_every_registered_type_is_covered() -> None:
    assert set(REGISTRY) == set(KINDS)


@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize("kind", KINDS)
async def test_destination_contract(
    harness: Harness, certificates: Certificates, kind: str, outcome: str
) -> None:
    scenario = await SETUPS[kind](harness, certificates, outcome)
    assert scenario.destination.type == kind
    started = time.monotonic()
    if outcome == "success":
        result = await harness.send(scenario.destination, RAW)
        assert isinstance(result, Sent)
        (delivered,) = scenario.arrived()
        assert REFERENCE in delivered
        assert scenario.attempts() == 1
        return
    with pytest.raises(DeliveryError) as caught:
        await harness.send(scenario.destination, RAW)
    elapsed = time.monotonic() - started
    error = caught.value
    assert error.reason, "every failure carries a reason"
    assert scenario.attempts() == 1, "one attempt per send, no hidden retries"
    if kind == "email":
        assert scenario.arrived() == [], "a refused or unfinished mail was not delivered"
    if outcome == "permanent":
        assert isinstance(error, PermanentDeliveryError), repr(error)
    else:
        assert isinstance(error, RetryableDeliveryError), repr(error)
    if outcome == "timeout":
        assert error.reason == "timeout"
        # the configured timeout is honoured: not earlier (a timer never fires early), and
        # not the config-wide 2 s (every far side here stalls for longer than that)
        assert TIMEOUT * 0.8 <= elapsed < 2.0, elapsed

"""HTTP destination against a real local HTTP server (tests.support.sinks.Sink)."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway import idwise
from gateway.destinations.base import Sent
from gateway.errors import PermanentDeliveryError, RetryableDeliveryError
from tests.support.config import closed_port
from tests.support.destinations import Harness
from tests.support.payloads import payload
from tests.support.raw_http import StaleKeepAlivePeer
from tests.support.sinks import Sink

pytestmark = pytest.mark.timeout(15)

SIGNING_SECRET = "whsec_" + base64.b64encode(bytes(range(7, 39))).decode()
LEGACY = resources.files("gateway").joinpath("samples", "legacy_finished_journey_no_event_id.json")


def legacy_bytes() -> bytes:
    return LEGACY.read_bytes()


def sha256_key(raw: bytes) -> str:
    document = json.loads(raw)
    canonical = json.dumps(
        {"event": document["event"], "body": document["body"]},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def http_spec(sink: Sink, **options: Any) -> dict[str, Any]:
    return {"type": "http", "url": sink.url, **options}


def header(received: Any, name: str) -> str | None:
    found: str | None = {k.lower(): v for k, v in received.headers.items()}.get(name.lower())
    return found


# ------------------------------------------------------------------------------- requests
async def test_default_body_is_the_original_bytes(harness: Harness) -> None:
    raw = (
        b'{"event":  "Finished Journey", "body": {\n  "eventId": "byte-exact-1",'
        b' "referenceNo": "caf\xc3\xa9", "journeyId": "j-9", "score": 1.50, "x": 1e3}}\n'
    )
    sink = await harness.sink()
    destination = harness.destination(http_spec(sink))
    result = await harness.send(destination, raw)
    assert isinstance(result, Sent)
    assert result.status == 200
    (received,) = sink.received
    assert received.body == raw
    assert received.path == "/hook"
    assert header(received, "Content-Type") == "application/json"
    assert header(received, "Idempotency-Key") == "byte-exact-1"


@dataclass
class MethodSink(Sink):
    """A Sink that also records the request method."""

    methods: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.methods.append(request.method)
        return await super().handle(request)


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
async def test_method(harness: Harness, method: str) -> None:
    sink = MethodSink()
    await sink.start()
    harness.sinks.append(sink)
    destination = harness.destination(http_spec(sink, method=method.lower()))
    await harness.send(destination, payload("Finished Journey"))
    assert sink.methods == [method]
    assert sink.received[0].body == payload("Finished Journey")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (payload("Finished Journey"), "f57e0b0b-24ba-4702-838b-05ed5c88d5b6"),
        (
            json.dumps(
                {"event": "Finished Journey", "eventId": "top-level-7", "body": {"journeyId": "j"}}
            ).encode(),
            "top-level-7",
        ),
        (legacy_bytes(), sha256_key(legacy_bytes())),
        (payload("Step Submitted"), sha256_key(payload("Step Submitted"))),
        (payload("Finished Ongoing Check"), sha256_key(payload("Finished Ongoing Check"))),
    ],
    ids=["body-eventId", "top-level-eventId", "legacy-journey", "legacy-step", "ongoing-check"],
)
async def test_idempotency_key_is_the_dedupe_key(
    harness: Harness, raw: bytes, expected: str
) -> None:
    sink = await harness.sink()
    await harness.send(harness.destination(http_spec(sink)), raw)
    assert header(sink.received[0], "Idempotency-Key") == expected
    assert sink.received[0].body == raw


async def test_same_event_same_idempotency_key_on_every_attempt(harness: Harness) -> None:
    sink = await harness.sink(responses=[503])
    destination = harness.destination(http_spec(sink))
    await harness.fail(destination, legacy_bytes(), RetryableDeliveryError)
    await harness.send(destination, legacy_bytes())
    keys = {header(r, "Idempotency-Key") for r in sink.received}
    assert len(sink.received) == 2 and len(keys) == 1


async def test_templated_headers(harness: Harness) -> None:
    sink = await harness.sink()
    destination = harness.destination(
        http_spec(
            sink,
            headers={
                "X-Journey": "{{ body.journeyId }}",
                "X-Label": "ref-{{ body.referenceNo }}/{{ event }}",
                "X-Missing": "[{{ body.nothing }}]",
                "Authorization": "Bearer http-static-token-77",
            },
        )
    )
    await harness.send(destination, payload("Updated Journey"))
    received = sink.received[0]
    assert header(received, "X-Journey") == "94814848d37d4044a22a0d63"
    assert header(received, "X-Label") == "ref-CUST-000418-2291/Updated Journey"
    assert header(received, "X-Missing") == "[]"
    assert header(received, "Authorization") == "Bearer http-static-token-77"
    assert header(received, "Idempotency-Key") == "55f85394-d28c-4d15-a085-9ab51986f574"


async def test_single_placeholder_header_with_structured_value_is_json_text(
    harness: Harness,
) -> None:
    sink = await harness.sink()
    destination = harness.destination(
        http_spec(
            sink,
            headers={
                "X-Steps": "{{ body.requiredSteps }}",
                "X-Unreviewed": "{{ body.manualDecision == null }}",
            },
        )
    )
    await harness.send(destination, payload("Verification Update Required"))
    received = sink.received[0]
    assert json.loads(header(received, "X-Steps") or "") == [
        {"stepId": "0", "reasonCode": "DOCUMENT_EXPIRING"}
    ]
    assert header(received, "X-Unreviewed") == "true"


async def test_payload_cannot_inject_headers(harness: Harness) -> None:
    raw = payload("Finished Journey", referenceNo="R-1\r\nX-Injected: yes\r\n\r\nGET / HTTP/1.1")
    sink = await harness.sink()
    destination = harness.destination(http_spec(sink, headers={"X-Ref": "{{ body.referenceNo }}"}))
    await harness.send(destination, raw)
    (received,) = sink.received
    assert header(received, "X-Injected") is None
    value = header(received, "X-Ref")
    assert value is not None and "\r" not in value and "\n" not in value
    assert value.startswith("R-1")
    assert received.body == raw


async def test_templated_body_keeps_json_types(harness: Harness) -> None:
    sink = await harness.sink()
    destination = harness.destination(
        http_spec(
            sink,
            body={
                "kind": "idwise.{{ event }}",
                "id": "{{ body.eventId }}",
                "version": "{{ body.updatedAMLVersionNumber }}",
                "versionText": "v{{ body.updatedAMLVersionNumber }}",
                "changed": "{{ body.systemDecision != body.previousSystemDecision }}",
                "missing": "{{ body.nothing }}",
                "whole": "{{ body }}",
                "constant": 7,
                "flags": [True, "{{ body.referenceNo }}", None],
            },
        )
    )
    raw = payload("AML Monitor Update")
    await harness.send(destination, raw)
    (received,) = sink.received
    assert header(received, "Content-Type") == "application/json"
    assert received.json() == {
        "kind": "idwise.AML Monitor Update",
        "id": "8284b4fe-2619-4d3e-b2f1-4a48341169d1",
        "version": 2,
        "versionText": "v2",
        "changed": True,
        "missing": None,
        "whole": json.loads(raw)["body"],
        "constant": 7,
        "flags": [True, "ACC-2025-0071", None],
    }
    assert isinstance(received.json()["version"], int)


# ------------------------------------------------------------------------------ responses
@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_2xx_is_success(harness: Harness, status: int) -> None:
    sink = await harness.sink(default=status)
    result = await harness.send(harness.destination(http_spec(sink)), payload("Finished Journey"))
    assert isinstance(result, Sent)
    assert result.status == status


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_not_followed_and_permanent(harness: Harness, status: int) -> None:
    sink = await harness.sink(responses=[(status, {"Location": "/elsewhere"}, "")])
    destination = harness.destination(http_spec(sink))
    error = await harness.fail(destination, payload("Finished Journey"), PermanentDeliveryError)
    assert error.status == status
    assert [r.path for r in sink.received] == ["/hook"]


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599])
async def test_retryable_statuses(harness: Harness, status: int) -> None:
    sink = await harness.sink(responses=[(status, {}, "busy")])
    destination = harness.destination(http_spec(sink))
    error = await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)
    assert error.status == status
    assert error.output == "busy"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 410, 413, 422])
async def test_other_4xx_are_permanent(harness: Harness, status: int) -> None:
    sink = await harness.sink(responses=[(status, {}, '{"error":"nope"}')])
    destination = harness.destination(http_spec(sink))
    error = await harness.fail(destination, payload("Finished Journey"), PermanentDeliveryError)
    assert error.status == status
    assert error.retry_after is None
    assert error.output == '{"error":"nope"}'


@pytest.mark.parametrize(
    ("status", "retry_after", "low", "high"),
    [
        (429, "120", 120, 120),
        (503, "0", 0, 0),
        (429, "HTTP-DATE+60", 57, 61),
        (503, "HTTP-DATE+30", 27, 31),
        (503, "HTTP-DATE-30", 0, 0),
    ],
    ids=["429-seconds", "503-zero", "429-date", "503-date", "503-past-date"],
)
async def test_retry_after(
    harness: Harness, status: int, retry_after: str, low: float, high: float
) -> None:
    if retry_after.startswith("HTTP-DATE"):
        offset = float(retry_after.removeprefix("HTTP-DATE"))
        retry_after = email.utils.formatdate(time.time() + offset, usegmt=True)
    sink = await harness.sink(responses=[(status, {"Retry-After": retry_after}, "")])
    destination = harness.destination(http_spec(sink))
    error = await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)
    assert error.status == status
    assert error.retry_after is not None
    assert low <= error.retry_after <= high


@pytest.mark.parametrize("value", [None, "soon", ""])
async def test_missing_or_garbled_retry_after(harness: Harness, value: str | None) -> None:
    headers = {} if value is None else {"Retry-After": value}
    sink = await harness.sink(responses=[(429, headers, "")])
    destination = harness.destination(http_spec(sink))
    error = await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)
    assert error.retry_after is None


async def test_timeout_is_retryable(harness: Harness) -> None:
    # the sink stalls for longer than the config-wide 2 s timeout
    sink = await harness.sink(delay=5.0, cancel_on_disconnect=True)
    destination = harness.destination(http_spec(sink), delivery={"timeout": "300ms"})
    error, elapsed = await harness.timed_fail(
        destination, payload("Finished Journey"), RetryableDeliveryError
    )
    assert error.reason == "timeout"
    # the destination's 300 ms: a timer never fires early, and it was not the 2 s default
    assert 0.25 < elapsed < 2.0, elapsed
    assert len(sink.received) == 1


async def test_peer_that_never_answers_times_out(harness: Harness) -> None:
    peer = await harness.silent()
    destination = harness.destination(
        {"type": "http", "url": f"http://127.0.0.1:{peer.port}/hook"}, delivery={"timeout": "300ms"}
    )
    error, elapsed = await harness.timed_fail(
        destination, payload("Finished Journey"), RetryableDeliveryError
    )
    assert error.reason == "timeout"
    assert elapsed < 1.0
    assert peer.connections == 1


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
async def test_peer_hanging_up_mid_request_gets_one_request_per_attempt(
    harness: Harness, method: str
) -> None:
    """aiohttp itself resent PUT (an idempotent method) on a fresh connection that dropped:
    the receiver got it twice within one attempt."""
    peer = await harness.silent(hang_up=True)
    destination = harness.destination(
        {"type": "http", "url": f"http://127.0.0.1:{peer.port}/hook", "method": method}
    )
    error = await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)
    assert error.reason == "connection"
    assert peer.requests == 1


async def test_a_stale_keep_alive_connection_is_retried_once_on_a_fresh_one(
    harness: Harness,
) -> None:
    """The receiver closes an idle keep-alive connection just as the next delivery reuses
    it, without an answer: the same attempt sends it again, once, with the same
    Idempotency-Key (Go's http.Transport rule for requests that carry one)."""
    peer = await StaleKeepAlivePeer().start()
    try:
        destination = harness.destination(
            {"type": "http", "url": f"http://127.0.0.1:{peer.port}/hook"}
        )
        first = await harness.send(destination, payload("Finished Journey", eventId="ka-1"))
        second = await harness.send(destination, payload("Finished Journey", eventId="ka-2"))
    finally:
        await peer.stop()
    assert (first.status, second.status) == (200, 200)
    # the first connection answered ka-1 and dropped ka-2; a fresh one took ka-2
    assert [keys for keys in peer.requests if keys] == [["ka-1", "ka-2"], ["ka-2"]]


async def test_connection_refused_is_retryable(harness: Harness) -> None:
    destination = harness.destination(
        {"type": "http", "url": f"http://127.0.0.1:{closed_port()}/hook"}
    )
    error = await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)
    assert error.reason == "connection"


# -------------------------------------------------------------------------------- signing
@pytest.mark.parametrize(
    ("raw", "body"),
    [
        (payload("Finished Journey"), None),
        (legacy_bytes(), None),
        (
            payload("AML Monitor Update"),
            {"ref": "{{ body.referenceNo }}", "v": "{{ body.updatedAMLVersionNumber }}"},
        ),
    ],
    ids=["original-body", "legacy-no-event-id", "templated-body"],
)
async def test_signature_verifies_with_the_reference_library(
    harness: Harness, raw: bytes, body: Any
) -> None:
    sink = await harness.sink()
    options: dict[str, Any] = {"sign": {"secret": SIGNING_SECRET}}
    if body is not None:
        options["body"] = body
    destination = harness.destination(http_spec(sink, **options))
    await harness.send(destination, raw)
    (received,) = sink.received
    headers = {k.lower(): v for k, v in received.headers.items()}
    assert headers["webhook-id"] == headers["idempotency-key"]
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 10
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(SIGNING_SECRET).verify(received.body, received.headers) == json.loads(
        received.body
    )
    # and a receiver holding another secret, or seeing other bytes, rejects it
    other = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(received.body, received.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SIGNING_SECRET).verify(received.body + b" ", received.headers)


NEXT_SECRET = "whsec_" + base64.b64encode(bytes(range(50, 82))).decode()


@pytest.mark.parametrize("verifier", ["standardwebhooks", "svix"])
async def test_several_secrets_sign_once_each_and_either_verifies(
    harness: Harness, verifier: str
) -> None:
    """A receiver rotating its secret holds the old or the new one: one `v1,` signature per
    configured secret, space-separated (the Standard Webhooks header), and both reference
    verifiers accept the request with either secret, and refuse it with neither."""
    from svix.webhooks import Webhook as SvixWebhook
    from svix.webhooks import WebhookVerificationError as SvixVerificationError

    sink = await harness.sink()
    options = {"sign": {"secret": [NEXT_SECRET, "", SIGNING_SECRET]}}  # "" = unset slot
    await harness.send(harness.destination(http_spec(sink, **options)), payload("Finished Step"))
    (received,) = sink.received
    signatures = header(received, "webhook-signature")
    assert signatures is not None
    assert [s.split(",")[0] for s in signatures.split(" ")] == ["v1", "v1"]
    headers = dict(received.headers)
    other = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
    if verifier == "standardwebhooks":
        for secret in (SIGNING_SECRET, NEXT_SECRET):
            assert Webhook(secret).verify(received.body, headers) == json.loads(received.body)
        with pytest.raises(WebhookVerificationError):
            Webhook(other).verify(received.body, headers)
    else:
        for secret in (SIGNING_SECRET, NEXT_SECRET):
            SvixWebhook(secret).verify(received.body, headers)  # raises when it fails
        with pytest.raises(SvixVerificationError):
            SvixWebhook(other).verify(received.body, headers)


async def test_unsigned_requests_carry_no_signature_headers(harness: Harness) -> None:
    sink = await harness.sink()
    await harness.send(harness.destination(http_spec(sink)), payload("Finished Journey"))
    headers = {k.lower() for k in sink.received[0].headers}
    assert not headers & {"webhook-id", "webhook-timestamp", "webhook-signature"}


@pytest.mark.parametrize("event_type", idwise.EVENT_TYPES)
async def test_every_event_type_is_forwarded_unchanged(harness: Harness, event_type: str) -> None:
    sink = await harness.sink()
    raw = payload(event_type)
    await harness.send(harness.destination(http_spec(sink)), raw)
    assert sink.received[0].body == raw

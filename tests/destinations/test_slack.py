"""Slack incoming-webhook destination against a local stand-in that answers like Slack."""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import pytest

from gateway import idwise
from gateway.destinations.base import Sent
from gateway.errors import PermanentDeliveryError, RetryableDeliveryError
from tests.support.config import closed_port
from tests.support.destinations import Harness
from tests.support.payloads import payload
from tests.support.sinks import SLACK_TOKEN, SlackStandIn

pytestmark = pytest.mark.timeout(15)


def slack_spec(server: SlackStandIn, **options: Any) -> dict[str, Any]:
    return {"type": "slack", "url": server.url, **options}


async def sent_message(harness: Harness, raw: bytes, **options: Any) -> dict[str, Any]:
    """Deliver `raw` through a slack destination; the JSON message Slack received."""
    server = await harness.slack()
    destination = harness.destination(slack_spec(server, **options))
    result = await harness.send(destination, raw)
    assert isinstance(result, Sent)
    assert len(server.received) == 1
    message: dict[str, Any] = server.received[0].json()
    return message


# ---------------------------------------------------------------------------------- policy
def test_default_rate_limit_is_one_per_second(harness: Harness) -> None:
    destination = harness.destination({"type": "slack", "url": "https://hooks.slack.com/x"})
    assert destination.type == "slack"
    assert destination.policy.rate_limit == (1.0, 1.0)


def test_rate_limit_can_be_overridden_per_destination(harness: Harness) -> None:
    faster = harness.destination(
        {"type": "slack", "url": "https://hooks.slack.com/x"}, delivery={"rate_limit": "5/s"}
    )
    assert faster.policy.rate_limit == (5.0, 1.0)
    # the 1/s default is Slack's, not every destination's
    http = harness.destination({"type": "http", "url": "http://127.0.0.1:9/"})
    assert http.policy.rate_limit is None


# ------------------------------------------------------------------------------- templates
async def test_text_and_blocks_templates_are_rendered(harness: Harness) -> None:
    server = await harness.slack()
    destination = harness.destination(
        slack_spec(
            server,
            text="{{ event }} for {{ body.referenceNo }}: {{ body.systemDecision }}",
            blocks=[
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": "*Journey* `{{ body.journeyId }}`"},
                },
                {
                    "type": "context",
                    "elements": [
                        {"type": "mrkdwn", "text": "AML v{{ body.updatedAMLVersionNumber }}"}
                    ],
                },
            ],
            username="IDWise",
            icon_emoji=":passport_control:",
        )
    )
    result = await harness.send(destination, payload("AML Monitor Update"))
    assert result.status == 200
    request = server.received[0]
    assert request.headers["Content-Type"].startswith("application/json")
    assert request.path.endswith(SLACK_TOKEN)
    message = request.json()
    assert message["text"] == "AML Monitor Update for ACC-2025-0071: Refer"
    assert message["blocks"] == [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "*Journey* `ec42c44b601bfc85534e47ae`"},
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "AML v2"}]},
    ]
    assert message["username"] == "IDWise"
    assert message["icon_emoji"] == ":passport_control:"


async def test_missing_values_render_empty(harness: Harness) -> None:
    message = await sent_message(
        harness, payload("Finished Journey"), text="[{{ body.noSuchField }}] {{ body.referenceNo }}"
    )
    assert message["text"] == "[] 8400193726523"


async def test_single_placeholder_text_with_structured_value_is_json_text(
    harness: Harness,
) -> None:
    raw = payload("Verification Update Required")
    message = await sent_message(harness, raw, text="{{ body.requiredSteps }}")
    assert json.loads(message["text"]) == [{"stepId": "0", "reasonCode": "DOCUMENT_EXPIRING"}]


# ---------------------------------------------------------------------------- default text
@pytest.mark.parametrize("event_type", idwise.EVENT_TYPES)
async def test_default_text_for_every_event_type(harness: Harness, event_type: str) -> None:
    raw = payload(event_type)
    body = json.loads(raw)["body"]
    message = await sent_message(harness, raw)
    text = message["text"]
    assert event_type in text
    assert body["referenceNo"] in text
    assert (body.get("journeyId") or body["spotCheckJourneyId"]) in text
    decision = body.get("finalDecision") or body.get("systemDecision")
    if decision:
        assert decision in text.splitlines()[0]
    for key in ("action", "trigger", "stepType"):
        if body.get(key):
            assert str(body[key]) in text, key


@pytest.mark.parametrize(
    ("raw", "decision", "marker"),
    [
        (payload("AML Monitor Update"), "Refer", ":warning:"),
        (payload("Finished Ongoing Check"), "Refer", ":warning:"),
        (
            payload("Manually Reviewed", manualDecision="Rejected", finalDecision="Rejected"),
            "Rejected",
            ":no_entry:",
        ),
        (payload("Finished Journey", finalDecision="Rejected"), "Rejected", ":no_entry:"),
    ],
    ids=["aml-refer", "ongoing-refer", "manual-rejected", "journey-rejected"],
)
async def test_default_text_flags_refer_and_rejected(
    harness: Harness, raw: bytes, decision: str, marker: str
) -> None:
    text = (await sent_message(harness, raw))["text"]
    headline = text.splitlines()[0]
    assert marker in headline
    assert decision in headline
    assert "needs attention" in headline


@pytest.mark.parametrize(
    "raw",
    [payload("Finished Journey"), payload("Manually Reviewed"), payload("Finished Spot Check")],
    ids=["complete", "approved", "spot-check-complete"],
)
async def test_default_text_does_not_flag_good_outcomes(harness: Harness, raw: bytes) -> None:
    headline = (await sent_message(harness, raw))["text"].splitlines()[0]
    assert ":white_check_mark:" in headline
    assert "needs attention" not in headline
    assert ":warning:" not in headline
    assert ":no_entry:" not in headline


async def test_default_text_details_per_type(harness: Harness) -> None:
    updated = (await sent_message(harness, payload("Updated Journey")))["text"]
    assert "action: Step Update" in updated
    assert "CUST-000418-2291" in updated and "94814848d37d4044a22a0d63" in updated

    required = (await sent_message(harness, payload("Verification Update Required")))["text"]
    assert "trigger: KYC Renewal" in required
    assert "required steps: 0 DOCUMENT_EXPIRING" in required

    renewal = (await sent_message(harness, payload("KYC Renewal Deadline Exceeded")))["text"]
    assert "required steps: 0 2025-09-15T00:00:00Z" in renewal

    aml = (await sent_message(harness, payload("AML Monitor Update")))["text"]
    assert "previous decision: Complete" in aml
    assert "AML version: 2" in aml

    spot = (await sent_message(harness, payload("Finished Spot Check")))["text"]
    assert "65ee4c1d9a2b7f3e81d700ca" in spot


# -------------------------------------------------------------------------------- escaping
def assert_no_ping(raw_request: bytes, message: dict[str, Any]) -> None:
    """No Slack control sequence survives, neither in the bytes nor in any string value."""
    for needle in ("<!channel>", "<!here>", "<!everyone>", "<@U0ADMIN>"):
        assert needle.encode() not in raw_request
        assert needle not in json.dumps(message, ensure_ascii=False)


async def test_default_text_escapes_payload_values(harness: Harness) -> None:
    document = idwise.sample("Verification Update Required")
    document["body"].update(
        referenceNo="<!channel> & <@U0ADMIN>",
        trigger="<!here>",
        requiredSteps=[{"stepId": "<!everyone>", "reasonCode": "x>y"}],
    )
    server = await harness.slack()
    destination = harness.destination(slack_spec(server))
    await harness.send(destination, json.dumps(document).encode())
    request = server.received[0]
    message = request.json()
    assert_no_ping(request.body, message)
    text = message["text"]
    assert "&lt;!channel&gt; &amp; &lt;@U0ADMIN&gt;" in text
    assert "&lt;!here&gt;" in text
    assert "&lt;!everyone&gt; x&gt;y" in text


async def test_templates_escape_inserted_values_but_not_template_text(harness: Harness) -> None:
    raw = payload(
        "Finished Journey", referenceNo="<!channel>", finalDecision="A&B <b>", journeyId="<!here>"
    )
    server = await harness.slack()
    destination = harness.destination(
        slack_spec(
            server,
            text="<https://ops.example/journeys|open> ref {{ body.referenceNo }} & {{ body.finalDecision }}",
            blocks=[
                {"type": "section", "text": {"type": "mrkdwn", "text": "{{ body.journeyId }}"}},
                {"type": "section", "fields": "{{ body }}"},
            ],
        )
    )
    await harness.send(destination, raw)
    request = server.received[0]
    message = request.json()
    assert_no_ping(request.body, message)
    # the template's own link markup is kept; only payload values are escaped
    assert message["text"] == (
        "<https://ops.example/journeys|open> ref &lt;!channel&gt; & A&amp;B &lt;b&gt;"
    )
    assert message["blocks"][0]["text"]["text"] == "&lt;!here&gt;"
    # a whole object inserted into blocks keeps its structure, every string escaped
    assert message["blocks"][1]["fields"]["referenceNo"] == "&lt;!channel&gt;"


async def test_single_placeholder_text_is_escaped(harness: Harness) -> None:
    raw = payload("Finished Journey", referenceNo="<!channel>")
    server = await harness.slack()
    destination = harness.destination(slack_spec(server, text="{{ body.referenceNo }}"))
    await harness.send(destination, raw)
    request = server.received[0]
    assert request.json()["text"] == "&lt;!channel&gt;"
    assert_no_ping(request.body, request.json())


# ------------------------------------------------------------------------------- responses
@pytest.mark.parametrize(
    ("status", "reply"),
    [
        (400, "invalid_payload"),
        (400, "no_text"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
        (403, "action_prohibited"),
        (404, "no_service"),
        (403, "invalid_token"),
        (403, "posting_to_general_channel_denied"),
        (400, "user_not_found"),
        (410, "team_disabled"),
    ],
)
async def test_documented_slack_errors_are_permanent(
    harness: Harness, status: int, reply: str
) -> None:
    server = await harness.slack()
    server.answer(status, reply)
    destination = harness.destination(slack_spec(server))
    error = await harness.fail(destination, payload("Finished Journey"), PermanentDeliveryError)
    assert error.reason == f"slack_{reply}"
    assert error.status == status
    assert error.retry_after is None
    assert len(server.received) == 1


async def test_unknown_webhook_is_permanent(harness: Harness) -> None:
    server = await harness.slack()
    destination = harness.destination(
        {"type": "slack", "url": server.url.replace(SLACK_TOKEN, "revokedToken123")}
    )
    error = await harness.fail(destination, payload("Finished Journey"), PermanentDeliveryError)
    assert (error.status, error.reason) == (404, "slack_no_service")


async def test_empty_message_is_refused_by_slack_and_permanent(harness: Harness) -> None:
    server = await harness.slack()
    destination = harness.destination(slack_spec(server, text="{{ body.noSuchField }}"))
    error = await harness.fail(destination, payload("Finished Journey"), PermanentDeliveryError)
    assert (error.status, error.reason) == (400, "slack_no_text")


async def test_ok_is_success(harness: Harness) -> None:
    server = await harness.slack()
    result = await harness.send(
        harness.destination(slack_spec(server)), payload("Finished Journey")
    )
    assert isinstance(result, Sent)
    assert result.status == 200
    assert result.output == "ok"


async def test_rate_limited_is_retryable_with_retry_after(harness: Harness) -> None:
    server = await harness.slack()
    server.answer(429, "rate_limited", {"Retry-After": "7"})
    destination = harness.destination(slack_spec(server))
    error = await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)
    assert error.status == 429
    assert error.retry_after == 7.0


async def test_rate_limited_with_http_date(harness: Harness) -> None:
    server = await harness.slack()
    server.answer(
        429, "rate_limited", {"Retry-After": email.utils.formatdate(time.time() + 30, usegmt=True)}
    )
    destination = harness.destination(slack_spec(server))
    error = await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)
    assert error.retry_after is not None
    assert 27 <= error.retry_after <= 31


async def test_rate_limited_without_retry_after(harness: Harness) -> None:
    server = await harness.slack()
    server.answer(429, "rate_limited")
    destination = harness.destination(slack_spec(server))
    error = await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)
    assert (error.status, error.retry_after) == (429, None)


@pytest.mark.parametrize(
    ("status", "reply"),
    [(500, "internal_error"), (502, ""), (503, "service_unavailable"), (504, ""), (408, "")],
)
async def test_server_errors_are_retryable(harness: Harness, status: int, reply: str) -> None:
    server = await harness.slack()
    server.answer(status, reply)
    destination = harness.destination(slack_spec(server))
    error = await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)
    assert error.status == status


async def test_too_early_is_retryable(harness: Harness) -> None:
    server = await harness.slack()
    server.answer(425, "too_early")
    destination = harness.destination(slack_spec(server))
    await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)


async def test_unknown_client_error_is_permanent(harness: Harness) -> None:
    server = await harness.slack()
    server.answer(400, "something_new_and_undocumented")
    destination = harness.destination(slack_spec(server))
    error = await harness.fail(destination, payload("Finished Journey"), PermanentDeliveryError)
    assert error.status == 400


async def test_redirect_is_not_followed_and_permanent(harness: Harness) -> None:
    server = await harness.slack()
    server.answer(302, "", {"Location": server.url + "-moved"})
    destination = harness.destination(slack_spec(server))
    error = await harness.fail(destination, payload("Finished Journey"), PermanentDeliveryError)
    assert error.status == 302
    assert len(server.received) == 1


async def test_timeout_is_retryable(harness: Harness) -> None:
    server = await harness.slack(delay=2.0)
    destination = harness.destination(slack_spec(server), delivery={"timeout": "300ms"})
    error, elapsed = await harness.timed_fail(
        destination, payload("Finished Journey"), RetryableDeliveryError
    )
    assert error.reason == "timeout"
    assert elapsed < 1.5


async def test_connection_refused_is_retryable_and_hides_the_url(harness: Harness) -> None:
    url = f"http://127.0.0.1:{closed_port()}/services/T0/B0/{SLACK_TOKEN}"
    destination = harness.destination({"type": "slack", "url": url})
    error = await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)
    assert error.reason == "connection"
    assert SLACK_TOKEN not in str(error)
    assert SLACK_TOKEN not in error.detail


async def test_newlines_in_values_cannot_forge_lines_of_the_message(harness: Harness) -> None:
    """A value with line breaks stays on the template's line (issue 13): it used to start
    lines of its own ("*Decision: Approved*") in the channel."""
    forged = "R-1\n:white_check_mark: *Approved* by compliance\r\nok"
    raw = payload("Finished Journey", referenceNo=forged)
    message = await sent_message(harness, raw, text="Ref {{ body.referenceNo }}\n*Refer*")
    assert message["text"].split("\n") == [
        "Ref R-1\\n:white_check_mark: *Approved* by compliance\\nok",
        "*Refer*",
    ]
    default = await sent_message(harness, raw)
    assert not any("*Approved*" in line.split("`")[0] for line in default["text"].split("\n"))
    assert "R-1\\n:white_check_mark: *Approved* by compliance\\nok" in default["text"]

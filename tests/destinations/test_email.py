"""Email destination against a real aiosmtpd server: plain, STARTTLS, implicit TLS, AUTH."""

from __future__ import annotations

import json
from email.message import EmailMessage
from typing import Any

import pytest

from gateway import idwise
from gateway.destinations.base import Sent
from gateway.errors import PermanentDeliveryError, RetryableDeliveryError
from tests.support.config import closed_port
from tests.support.destinations import Harness
from tests.support.payloads import payload
from tests.support.smtp import PASSWORD, USERNAME, RefuseData, RefuseRecipients, SmtpServer
from tests.support.tls import Certificates

pytestmark = pytest.mark.timeout(15)

SENDER = "idwise-gateway@bank.test"
TO = ["compliance@bank.test", "risk@bank.test"]
CC = ["audit@bank.test"]


def email_spec(port: int, security: str = "none", **options: Any) -> dict[str, Any]:
    return {
        "type": "email",
        "host": "127.0.0.1",
        "port": port,
        "security": security,
        "from": SENDER,
        "to": TO[:1],
        **options,
    }


def tls_spec(
    server: SmtpServer, certificates: Certificates, security: str, **options: Any
) -> dict[str, Any]:
    return email_spec(server.port, security, ca_file=str(certificates.cert), **options)


def plain_text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None, "no text/plain part"
    text: str = part.get_content()
    return text


def nothing_sent(server: SmtpServer) -> bool:
    return not server.delivered and not server.handler.rcpt_seen


# ------------------------------------------------------------------------- content, plain
async def test_plain_delivery_with_templates_and_recipients(harness: Harness) -> None:
    server = harness.smtp()
    destination = harness.destination(
        email_spec(
            server.port,
            to=TO,
            cc=CC,
            subject="[{{ event }}] {{ body.referenceNo }}: {{ body.systemDecision }}",
            text="Journey {{ body.journeyId }} needs review (AML v{{ body.updatedAMLVersionNumber }}).",
            html="<p>Journey <b>{{ body.journeyId }}</b></p>",
        )
    )
    result = await harness.send(destination, payload("AML Monitor Update"))
    assert isinstance(result, Sent)
    assert len(server.delivered) == 1
    delivered = server.delivered[0]
    assert delivered.tls is False
    assert delivered.mail_from == SENDER
    assert sorted(delivered.rcpt_tos) == sorted(TO + CC)
    message = delivered.message
    assert message["From"] == SENDER
    assert message["To"] == ", ".join(TO)
    assert message["Cc"] == ", ".join(CC)
    assert message["Bcc"] is None
    assert message["Subject"] == "[AML Monitor Update] ACC-2025-0071: Refer"
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content().strip() == (
        "Journey ec42c44b601bfc85534e47ae needs review (AML v2)."
    )
    assert html.get_content().strip() == "<p>Journey <b>ec42c44b601bfc85534e47ae</b></p>"


async def test_default_subject_and_text(harness: Harness) -> None:
    server = harness.smtp()
    destination = harness.destination(email_spec(server.port))
    await harness.send(destination, payload("Finished Journey"))
    message = server.delivered[0].message
    subject = message["Subject"]
    assert "Finished Journey" in subject and "Complete" in subject and "8400193726523" in subject
    text = plain_text(message)
    for value in (
        "6720b9f3a41c5e0d8f7a122e",
        "8400193726523",
        "f57e0b0b-24ba-4702-838b-05ed5c88d5b6",
    ):
        assert value in text


@pytest.mark.parametrize(
    "subject",
    ["Ref {{ body.referenceNo }}", "{{ body.referenceNo }}", None],
    ids=["text-template", "single-placeholder", "default-subject"],
)
async def test_payload_cannot_inject_headers_or_recipients(
    harness: Harness, subject: str | None
) -> None:
    raw = payload(
        "Finished Journey",
        referenceNo="R-1\r\nBcc: evil@x.test\r\nX-Injected: yes\n\nbody",
        systemDecision="Refer\nCc: evil2@x.test",
    )
    server = harness.smtp()
    options = {} if subject is None else {"subject": subject}
    destination = harness.destination(email_spec(server.port, **options))
    await harness.send(destination, raw)
    delivered = server.delivered[0]
    assert delivered.rcpt_tos == TO[:1]
    assert server.handler.rcpt_seen == TO[:1]
    message = delivered.message
    assert message["Bcc"] is None
    assert message["X-Injected"] is None
    assert message["Cc"] is None
    head = delivered.content.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        assert not line.lower().startswith((b"bcc:", b"x-injected:", b"cc:")), line
    assert "evil@x.test" in message["Subject"]  # the value is kept, as harmless text


# ------------------------------------------------------------------------------ security
async def test_starttls_delivers_over_tls(harness: Harness, certificates: Certificates) -> None:
    server = harness.smtp(starttls=certificates.server_context())
    destination = harness.destination(tls_spec(server, certificates, "starttls"))
    await harness.send(destination, payload("Finished Journey"))
    assert len(server.delivered) == 1
    assert server.delivered[0].tls is True


async def test_starttls_with_authentication(harness: Harness, certificates: Certificates) -> None:
    server = harness.smtp(starttls=certificates.server_context(), auth=True)
    destination = harness.destination(
        tls_spec(server, certificates, "starttls", username=USERNAME, password=PASSWORD)
    )
    await harness.send(destination, payload("Finished Journey"))
    delivered = server.delivered[0]
    assert (delivered.tls, delivered.login) == (True, USERNAME)


async def test_wrong_password_is_permanent(harness: Harness, certificates: Certificates) -> None:
    server = harness.smtp(starttls=certificates.server_context(), auth=True)
    destination = harness.destination(
        tls_spec(server, certificates, "starttls", username=USERNAME, password="not-the-password")
    )
    error = await harness.fail(destination, payload("Finished Journey"), PermanentDeliveryError)
    assert (error.reason, error.status) == ("smtp_5xx", 535)
    assert nothing_sent(server)
    assert "not-the-password" not in str(error)


async def test_starttls_is_required_never_plaintext(harness: Harness) -> None:
    server = harness.smtp()  # no STARTTLS offered
    destination = harness.destination(email_spec(server.port, "starttls"))
    error = await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)
    assert error.reason == "smtp_connection"
    assert nothing_sent(server)


async def test_starttls_refuses_an_untrusted_certificate(
    harness: Harness, certificates: Certificates
) -> None:
    server = harness.smtp(starttls=certificates.other_server_context())
    destination = harness.destination(tls_spec(server, certificates, "starttls"))
    error = await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)
    assert error.reason == "smtp_connection"
    assert nothing_sent(server)


async def test_implicit_tls_delivers(harness: Harness, certificates: Certificates) -> None:
    server = harness.smtp(implicit_tls=certificates.server_context())
    destination = harness.destination(tls_spec(server, certificates, "tls"))
    await harness.send(destination, payload("Finished Journey"))
    assert len(server.delivered) == 1
    assert server.delivered[0].tls is True


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_implicit_tls_with_authentication(
    harness: Harness, certificates: Certificates
) -> None:
    # aiosmtpd only counts STARTTLS for auth_require_tls; this connection is TLS from the start
    server = harness.smtp(
        implicit_tls=certificates.server_context(), auth=True, auth_require_tls=False
    )
    destination = harness.destination(
        tls_spec(server, certificates, "tls", username=USERNAME, password=PASSWORD)
    )
    await harness.send(destination, payload("Finished Journey"))
    delivered = server.delivered[0]
    assert (delivered.tls, delivered.login) == (True, USERNAME)


async def test_implicit_tls_against_plaintext_server_fails(
    harness: Harness, certificates: Certificates
) -> None:
    server = harness.smtp()
    destination = harness.destination(
        tls_spec(server, certificates, "tls"), delivery={"timeout": "1s"}
    )
    error = await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)
    assert error.reason in ("smtp_connection", "timeout")
    assert nothing_sent(server)


async def test_implicit_tls_refuses_an_untrusted_certificate(
    harness: Harness, certificates: Certificates
) -> None:
    server = harness.smtp(implicit_tls=certificates.other_server_context())
    destination = harness.destination(tls_spec(server, certificates, "tls"))
    await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)
    assert nothing_sent(server)


# --------------------------------------------------------------------------- SMTP replies
@pytest.mark.parametrize("stage", ["rcpt", "data"])
async def test_4xx_is_retryable(harness: Harness, stage: str) -> None:
    handler = (
        RefuseRecipients("451 4.3.0 try later")
        if stage == "rcpt"
        else RefuseData("451 4.3.0 try later")
    )
    server = harness.smtp(handler)
    destination = harness.destination(email_spec(server.port))
    error = await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)
    assert (error.reason, error.status) == ("smtp_4xx", 451)
    assert not server.delivered


@pytest.mark.parametrize(
    ("stage", "reply"),
    [
        ("rcpt", "550 5.1.1 no such user"),
        ("data", "550 5.7.1 rejected by policy"),
        ("data", "554 5.6.0 message refused"),
    ],
)
async def test_5xx_is_permanent(harness: Harness, stage: str, reply: str) -> None:
    handler = RefuseRecipients(reply) if stage == "rcpt" else RefuseData(reply)
    server = harness.smtp(handler)
    destination = harness.destination(email_spec(server.port))
    error = await harness.fail(destination, payload("Finished Journey"), PermanentDeliveryError)
    assert error.reason == "smtp_5xx"
    assert error.status == int(reply[:3])
    assert not server.delivered


async def test_one_recipient_deferred_is_not_reported_as_sent(harness: Harness) -> None:
    server = harness.smtp(RefuseRecipients("451 4.2.1 mailbox busy", only=("risk@bank.test",)))
    destination = harness.destination(email_spec(server.port, to=TO))
    error = await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)
    assert (error.reason, error.status) == ("smtp_4xx", 451)


async def test_connection_refused_is_retryable(harness: Harness) -> None:
    destination = harness.destination(email_spec(closed_port()))
    error = await harness.fail(destination, payload("Finished Journey"), RetryableDeliveryError)
    assert error.reason == "smtp_connection"


async def test_server_that_never_greets_times_out(harness: Harness) -> None:
    peer = await harness.silent()
    destination = harness.destination(email_spec(peer.port), delivery={"timeout": "400ms"})
    error, elapsed = await harness.timed_fail(
        destination, payload("Finished Journey"), RetryableDeliveryError
    )
    assert error.reason == "timeout"
    assert elapsed < 1.5
    assert peer.connections == 1


async def test_every_event_type_is_mailed(harness: Harness) -> None:
    server = harness.smtp()
    destination = harness.destination(email_spec(server.port))
    for event_type in idwise.EVENT_TYPES:
        await harness.send(destination, payload(event_type))
    assert len(server.delivered) == len(idwise.EVENT_TYPES)
    for event_type, delivered in zip(idwise.EVENT_TYPES, server.delivered, strict=True):
        assert event_type in delivered.message["Subject"]
        text = plain_text(delivered.message)
        assert json.loads(payload(event_type))["body"]["referenceNo"] in text


# ------------------------------------------------------------- hostile values (issue 13)
HOSTILE_HTML = (
    '<a href="https://evil.test">click</a><img src=x onerror=alert(1)><script>x()</script>'
)


async def test_html_part_escapes_every_inserted_value(harness: Harness) -> None:
    """Payload values used to land raw in the HTML part (links, images, script tags)."""
    server = harness.smtp()
    destination = harness.destination(
        email_spec(server.port, html="<p>Ref <b>{{ body.referenceNo }}</b> {{ body.note }}</p>")
    )
    raw = payload("Finished Journey", referenceNo=HOSTILE_HTML, note="a & b \"q\" 'x'")
    await harness.send(destination, raw)
    part = server.delivered[0].message.get_body(("html",))
    assert part is not None
    html = part.get_content()
    assert "<a " not in html and "<img" not in html and "<script" not in html
    assert "&lt;script&gt;" in html and "&lt;a href=&quot;https://evil.test&quot;&gt;" in html
    assert "a &amp; b &quot;q&quot; &#x27;x&#x27;" in html
    assert html.strip().startswith("<p>Ref <b>")  # the template's own markup stays


async def test_html_raw_is_the_template_authors_explicit_opt_out(harness: Harness) -> None:
    server = harness.smtp()
    destination = harness.destination(
        email_spec(server.port, html="<div>{{ body.referenceNo }}</div>", html_raw=True)
    )
    await harness.send(destination, payload("Finished Journey", referenceNo="<i>R</i>"))
    part = server.delivered[0].message.get_body(("html",))
    assert part is not None and "<div><i>R</i></div>" in part.get_content()


async def test_newlines_in_values_cannot_forge_lines_of_the_text_part(harness: Harness) -> None:
    server = harness.smtp()
    destination = harness.destination(
        email_spec(server.port, text="Reference: {{ body.referenceNo }}\nDecision: Refer\n")
    )
    forged = "R-1\nDecision: Approved\r\nApproved by: compliance\u2028x"
    await harness.send(destination, payload("Finished Journey", referenceNo=forged))
    lines = plain_text(server.delivered[0].message).splitlines()
    assert lines == [
        "Reference: R-1\\nDecision: Approved\\nApproved by: compliance\\nx",
        "Decision: Refer",
    ]

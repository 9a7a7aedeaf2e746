"""Email destination over SMTP (aiosmtplib). I/O in `send`.

`security: starttls` means TLS is required after STARTTLS, never silently plain. Headers
are built by `email.message.EmailMessage`, and rendered subjects lose CR/LF, so payload
values cannot inject headers. SMTP 4xx and connection problems retry; 5xx give up.
"""

from __future__ import annotations

import html
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib

from gateway.destinations.base import (
    BuildContext,
    DestinationProblem,
    SecretKeys,
    SendContext,
    Sent,
    local_shortage,
)
from gateway.errors import LocalResourceError, PermanentDeliveryError, RetryableDeliveryError
from gateway.events import Event
from gateway.render import Template, compile_text, one_line, render_text
from gateway.retry import DeliveryPolicy
from gateway.secret import Secret

#: the SMTP password (the username is not secret)
SECRETS = SecretKeys(whole=frozenset({"password"}))

DEFAULT_SUBJECT = (
    "[IDWise] {{ event }}: {{ body.finalDecision || body.systemDecision || '' }}"
    " (ref {{ body.referenceNo }})"
)
DEFAULT_TEXT = """IDWise event: {{ event }}
Decision: {{ body.finalDecision || body.systemDecision }}
Journey: {{ body.journeyId || body.spotCheckJourneyId }}
Reference: {{ body.referenceNo }}
Event id: {{ body.eventId }}

Payload:
{{ body }}
"""


@dataclass(frozen=True, slots=True)
class EmailDestination:
    name: str
    policy: DeliveryPolicy
    host: str
    port: int
    security: str
    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: Template
    text: Template
    html: Template | None = None
    html_raw: bool = False  # the template author's explicit opt-out of escaping
    username: Secret | None = None
    password: Secret | None = None
    ca_file: Path | None = None
    verify: bool = True
    type: str = "email"
    # built once: loading the CA store takes tens of milliseconds of the event loop
    tls: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    def templates(self) -> dict[str, Template]:
        found = {"subject": self.subject, "text": self.text}
        if self.html is not None:
            found["html"] = self.html
        return found

    def message(self, event: Event) -> EmailMessage:
        message = EmailMessage()
        subject = render_text(self.subject, event.document)
        message["Subject"] = " ".join(subject.split())  # no CR/LF: no header injection
        message["From"] = self.sender
        message["To"] = ", ".join(self.to)
        if self.cc:
            message["Cc"] = ", ".join(self.cc)
        message["Message-ID"] = make_msgid(domain="idwise-gateway")
        message["X-IDWise-Event-Id"] = " ".join(event.dedupe_key.split())
        message.set_content(self.render_text_part(event))
        if self.html is not None:
            message.add_alternative(self.render_html_part(event), subtype="html")
        return message

    def render_text_part(self, event: Event) -> str:
        # an inserted value stays on its line: a payload cannot forge a line of the mail
        return render_text(self.text, event.document, one_line)

    def render_html_part(self, event: Event) -> str:
        """Every inserted value HTML-escaped (no links, images or scripts from a payload),
        unless the destination says `html_raw: true`."""
        assert self.html is not None
        return render_text(self.html, event.document, None if self.html_raw else _escape_html)

    def preview(self, event: Event) -> dict[str, Any]:
        message = self.message(event)
        preview: dict[str, Any] = {
            "smtp": f"{self.host}:{self.port} ({self.security})",
            "from": self.sender,
            "to": list(self.to),
            "subject": message["Subject"],
            "text": self.render_text_part(event),
        }
        if self.cc:
            preview["cc"] = list(self.cc)
        if self.html is not None:
            preview["html"] = self.render_html_part(event)
        return preview

    async def send(self, event: Event, context: SendContext) -> Sent:
        message = self.message(event)
        try:
            refused, reply = await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self.username.reveal() if self.username else None,
                password=self.password.reveal() if self.password else None,
                use_tls=self.security == "tls",
                start_tls=self.security == "starttls",
                tls_context=self.tls,
                timeout=self.policy.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            raise _by_code(min(codes) if codes else 550, "recipients refused") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _by_code(exc.code, exc.message) from None
        except (aiosmtplib.SMTPTimeoutError, TimeoutError) as exc:
            raise RetryableDeliveryError("timeout", type(exc).__name__) from None
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            if local_shortage(exc):
                raise LocalResourceError("local_resources", str(exc)[:200]) from None
            # connection refused, STARTTLS unavailable or TLS failure: may heal, so retry
            raise RetryableDeliveryError("smtp_connection", str(exc)[:200]) from None
        if refused:
            # aiosmtplib raises only when every recipient is refused; one refused is a failure
            # too (a retry re-sends to all: at-least-once for the ones that accepted)
            codes = sorted(response.code for response in refused.values())
            raise _by_code(codes[0], f"recipients refused: {', '.join(sorted(refused))}")
        return Sent(f"SMTP {reply[:120]}")


def _escape_html(text: str) -> str:
    return html.escape(text, quote=True)


def _by_code(code: int, message: str) -> RetryableDeliveryError | PermanentDeliveryError:
    detail = f"SMTP {code} {message}"[:200]
    if 400 <= code < 500:
        return RetryableDeliveryError("smtp_4xx", detail, status=code)
    return PermanentDeliveryError("smtp_5xx", detail, status=code)


def build(name: str, raw: dict[str, Any], ctx: BuildContext) -> EmailDestination:
    security = str(raw.get("security", "starttls"))
    default_port = {"starttls": 587, "tls": 465, "none": 25}[security]
    for key in ("from", *(f"to[{i}]" for i in range(len(raw["to"])))):
        address = raw["from"] if key == "from" else raw["to"][int(key[3:-1])]
        if "@" not in address or any(c in address for c in "\r\n"):
            ctx.problems.append(DestinationProblem(key, "is not an email address"))
    if bool(raw.get("username")) != bool(raw.get("password")):
        ctx.problems.append(DestinationProblem("password", "username and password go together"))
    ca_file = ctx.path(raw["ca_file"]) if raw.get("ca_file") else None
    if ca_file is not None and not ca_file.is_file():
        ctx.problems.append(DestinationProblem("ca_file", f"no such file: {ca_file}"))
    tls = None
    if security != "none" and (ca_file is None or ca_file.is_file()):
        try:
            tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        except (ssl.SSLError, OSError) as exc:
            ctx.problems.append(DestinationProblem("ca_file", f"cannot load certificates: {exc}"))
        else:
            if not raw.get("verify", True):
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
    return EmailDestination(
        tls=tls,
        name=name,
        policy=ctx.policy(raw),
        host=str(raw["host"]),
        port=int(raw.get("port", default_port)),
        security=security,
        sender=str(raw["from"]),
        to=tuple(raw["to"]),
        cc=tuple(raw.get("cc") or ()),
        subject=ctx.template(raw, "subject", compile_text(DEFAULT_SUBJECT)),
        text=ctx.template(raw, "text", compile_text(DEFAULT_TEXT)),
        html=ctx.template(raw, "html"),
        html_raw=bool(raw.get("html_raw", False)),
        username=ctx.secret(raw, "username"),
        password=ctx.secret(raw, "password"),
        ca_file=ca_file,
        verify=bool(raw.get("verify", True)),
    )

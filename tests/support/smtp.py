"""A real SMTP server for the email tests: an aiosmtpd `Controller` (its own thread) with a
recording handler, optional STARTTLS / implicit TLS / AUTH, and handlers that refuse
recipients or data, or stall. Does network I/O."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support.config import free_port


@dataclass
class Delivered:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    login: str | None

    @property
    def message(self) -> EmailMessage:
        message: EmailMessage = message_from_bytes(self.content, policy=default_policy)
        return message


class Recorder:
    """aiosmtpd handler: accepts every message and records it, with how it arrived."""

    def __init__(self) -> None:
        self.delivered: list[Delivered] = []
        self.rcpt_seen: list[str] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.rcpt_seen.append(address)
        reply = self.rcpt_reply(address)
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    def rcpt_reply(self, address: str) -> str:
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await self.data_reply()
        if reply.startswith("250"):
            transport = server.transport
            tls = transport is not None and transport.get_extra_info("ssl_object") is not None
            login = session.auth_data.login.decode() if session.auth_data else None
            self.delivered.append(
                Delivered(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    bytes(envelope.original_content or envelope.content),
                    tls,
                    login,
                )
            )
        return reply

    async def data_reply(self) -> str:
        return "250 OK"


class RefuseRecipients(Recorder):
    """Refuses RCPT TO for the given addresses (all if none given) with `reply`."""

    def __init__(self, reply: str, only: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.reply = reply
        self.only = only

    def rcpt_reply(self, address: str) -> str:
        return self.reply if not self.only or address in self.only else "250 OK"


class RefuseData(Recorder):
    def __init__(self, reply: str) -> None:
        super().__init__()
        self.reply = reply

    async def data_reply(self) -> str:
        return self.reply


class StallData(Recorder):
    """Takes `seconds` to answer DATA (a hung mail server)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    async def data_reply(self) -> str:
        await asyncio.sleep(self.seconds)
        return "250 OK"


USERNAME = "gateway-mailer"
PASSWORD = "mail-pass-Q7w9e2r4"


def check_password(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = (
        isinstance(data, LoginPassword)
        and data.login == USERNAME.encode()
        and data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


class _ClosingController(Controller):
    """A Controller that aborts every server-side connection in its own loop before it
    stops. Otherwise a connection whose close is still in flight (a TLS close_notify the
    client has not answered yet) is left to the garbage collector, and its ResourceWarning
    lands in whichever test happens to run next."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sessions: list[Any] = []

    def factory(self) -> Any:
        smtp = super().factory()
        self.sessions.append(smtp)
        return smtp

    def stop(self, no_assert: bool = False) -> None:
        closed = threading.Event()

        def abort_all() -> None:
            for smtp in self.sessions:
                for transport in (smtp.transport, getattr(smtp, "_original_transport", None)):
                    if transport is not None:
                        with contextlib.suppress(Exception):
                            transport.abort()
            closed.set()

        with contextlib.suppress(RuntimeError):  # the loop is already gone
            self.loop.call_soon_threadsafe(abort_all)
            closed.wait(2)
        super().stop(no_assert)


@dataclass
class SmtpServer:
    handler: Recorder
    controller: Controller
    port: int

    @property
    def delivered(self) -> list[Delivered]:
        return self.handler.delivered

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.controller.stop()


def start_smtp(
    handler: Recorder | None = None,
    *,
    starttls: ssl.SSLContext | None = None,
    implicit_tls: ssl.SSLContext | None = None,
    auth: bool = False,
    **smtp_options: Any,
) -> SmtpServer:
    handler = handler or Recorder()
    port = free_port()
    options: dict[str, Any] = dict(smtp_options)
    if starttls is not None:
        options.update(tls_context=starttls, require_starttls=True)
    if auth:
        options.update(authenticator=check_password, auth_required=True)
    controller = _ClosingController(
        handler,
        hostname="127.0.0.1",
        port=port,
        server_hostname="localhost",
        ssl_context=implicit_tls,
        ready_timeout=5,
        **options,
    )
    controller.start()
    return SmtpServer(handler, controller, port)

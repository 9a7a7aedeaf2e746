"""Real local stand-ins for the services destinations talk to, all on 127.0.0.1.

- `SlackStandIn`: an aiohttp server that answers like Slack's incoming webhooks (plain-text
  error codes such as `invalid_payload`, `no_text`, `no_service`; scripted answers on demand).
- `SmtpServer`: an aiosmtpd `Controller` (its own thread) with a recording handler, optional
  STARTTLS / implicit TLS / AUTH, and handlers that answer 4xx/5xx or stall.
- `SilentServer`: accepts TCP connections and never says a word (a hung peer).
- helpers for test scripts and for checking that processes are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import stat
import subprocess
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.helpers import free_port

# ------------------------------------------------------------------------------------- Slack
SLACK_TOKEN = "XyZslackWebhookSecret0123456789"  # the secret part of an incoming-webhook URL


@dataclass
class SlackRequest:
    path: str
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)


@dataclass
class SlackStandIn:
    """Answers like https://hooks.slack.com/services/T.../B.../<token>.

    Without a scripted answer it validates the message the way Slack does: unknown webhook
    -> 404 `no_service`; not a JSON object -> 400 `invalid_payload`; neither `text` nor
    `blocks` -> 400 `no_text`; else 200 `ok`. `answers` (status, text[, headers]) are used
    first, one per request."""

    answers: list[tuple[Any, ...]] = field(default_factory=list)
    received: list[SlackRequest] = field(default_factory=list)
    delay: float = 0.0
    port: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/T0GATEWAY/B0GATEWAY/{SLACK_TOKEN}"

    def answer(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        self.answers.append((status, text, headers or {}))

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.received.append(SlackRequest(request.path, dict(request.headers), raw))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.answers:
            status, text, headers = self.answers.pop(0)
            return web.Response(status=status, text=text, headers=headers)
        if request.match_info["token"] != SLACK_TOKEN:
            return web.Response(status=404, text="no_service")
        try:
            message = json.loads(raw)
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if not isinstance(message, dict):
            return web.Response(status=400, text="invalid_payload")
        if not message.get("text") and not message.get("blocks"):
            return web.Response(status=400, text="no_text")
        return web.Response(status=200, text="ok")

    async def start(self) -> SlackStandIn:
        app = web.Application()
        app.router.add_post("/services/{team}/{bot}/{token}", self.handle)
        self.runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


# -------------------------------------------------------------------------------------- SMTP
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


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context


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
    controller = Controller(
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


# -------------------------------------------------------------------------------- raw peers
class SilentServer:
    """A TCP server on 127.0.0.1 that never answers. With `hang_up`, it reads one request
    head (up to a blank line) and closes the connection without a word, like a receiver
    that crashes mid-request; `requests` counts those heads."""

    def __init__(self, hang_up: bool = False) -> None:
        self.hang_up = hang_up
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0
        self.requests = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        with contextlib.suppress(Exception):
            if self.hang_up:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                writer.close()
                return
            await reader.read()

    async def start(self) -> SilentServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1)


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (connection refused)."""
    return free_port()


# ----------------------------------------------------------------------------- certificates
def make_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.pem", folder / f"{name}-key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


# ---------------------------------------------------------------------------------- scripts
def write_script(folder: Path, name: str, body: str) -> Path:
    """An executable #!/bin/sh script in `folder`."""
    path = folder / name
    path.write_text("#!/bin/sh\n" + body.lstrip("\n"))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def is_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie no longer runs anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_dead(pids: list[int], timeout: float = 1.0) -> list[int]:
    """The pids still alive after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    alive = [pid for pid in pids if is_alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [pid for pid in alive if is_alive(pid)]
    return alive

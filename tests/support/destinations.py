"""`Harness`: builds destinations the way the gateway does (YAML config -> load_config), sends
events through them with a real aiohttp session, and owns every local server a test starts
(sinks, Slack stand-ins, silent peers, SMTP servers) and stops them. Does I/O."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from gateway.config.load import load_config
from gateway.destinations.base import Destination, SendContext, Sent
from gateway.destinations.client import HttpClient
from gateway.errors import DeliveryError
from gateway.events import parse_event
from tests.support.config import base_config, write_config
from tests.support.process import write_script
from tests.support.raw_http import SilentServer
from tests.support.sinks import Sink, SlackStandIn
from tests.support.smtp import Recorder, SmtpServer, start_smtp


class Harness:
    """Builds destinations the way the gateway does and owns every server a test starts."""

    def __init__(self, tmp_path: Path, client: HttpClient) -> None:
        self.tmp_path = tmp_path
        self.client = client
        self.slacks: list[SlackStandIn] = []
        self.sinks: list[Sink] = []
        self.silents: list[SilentServer] = []
        self.smtps: list[SmtpServer] = []
        self.configs = 0

    # ---- servers ------------------------------------------------------------------------
    async def slack(self, **options: Any) -> SlackStandIn:
        server = await SlackStandIn(**options).start()
        self.slacks.append(server)
        return server

    async def sink(self, **options: Any) -> Sink:
        server = await Sink(**options).start()
        self.sinks.append(server)
        return server

    async def silent(self, hang_up: bool = False) -> SilentServer:
        server = await SilentServer(hang_up).start()
        self.silents.append(server)
        return server

    def smtp(self, handler: Recorder | None = None, **options: Any) -> SmtpServer:
        server = start_smtp(handler, **options)
        self.smtps.append(server)
        return server

    def folder(self, name: str) -> Path:
        path = self.tmp_path / name
        path.mkdir()
        return path

    def script(self, name: str, body: str) -> Path:
        return write_script(self.tmp_path, name, body)

    # ---- destinations -------------------------------------------------------------------
    def destination(
        self, spec: dict[str, Any], *, name: str = "target", delivery: dict[str, Any] | None = None
    ) -> Destination:
        """Write a config holding `spec` as destination `name`, load it, return the built one."""
        self.configs += 1
        folder = self.tmp_path / f"config-{self.configs}"
        folder.mkdir()
        spec = dict(spec)
        if delivery is not None:
            spec["delivery"] = delivery
        path = write_config(folder, base_config(folder, destinations={name: spec}))
        return load_config(path).destinations[name]

    async def send(self, destination: Destination, raw: bytes) -> Sent:
        return await destination.send(parse_event(raw), SendContext(self.client))

    async def fail(
        self, destination: Destination, raw: bytes, expected: type[DeliveryError]
    ) -> DeliveryError:
        """Send and return the error, which must be of type `expected`."""
        with pytest.raises(DeliveryError) as caught:
            await self.send(destination, raw)
        assert type(caught.value) is expected, f"{caught.value!r} ({caught.value.reason})"
        return caught.value

    async def timed_fail(
        self, destination: Destination, raw: bytes, expected: type[DeliveryError]
    ) -> tuple[DeliveryError, float]:
        started = time.monotonic()
        error = await self.fail(destination, raw, expected)
        return error, time.monotonic() - started

    async def close(self) -> None:
        for smtp in self.smtps:
            smtp.stop()
        for slack in self.slacks:
            await slack.stop()
        for sink in self.sinks:
            await sink.stop()
        for silent in self.silents:
            await silent.stop()

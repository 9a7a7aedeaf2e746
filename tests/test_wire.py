"""The webhook's 200 written in one piece (gateway/web/wire.py), read byte for byte off a
real listener: the same headers aiohttp sends, keep-alive and close honoured, pipelined
requests answered in order, HTTP/1.0 answered in its own version."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.web.wire import AVAILABLE
from tests.support.config import TOKEN
from tests.support.payloads import payload
from tests.support.store import event_count

PATH = "/webhooks/idwise"


def post(body: bytes, version: str = "1.1", close: bool = False) -> bytes:
    head = (
        f"POST {PATH} HTTP/{version}\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    )
    return head.encode() + body


async def answer(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode("latin-1")
    status, *lines = head[:-4].split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    body = await asyncio.wait_for(reader.readexactly(int(headers["Content-Length"])), 5)
    return status, headers, body


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


@contextlib.asynccontextmanager
async def connection(url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A raw connection to the listener, closed on the way out."""
    reader, writer = await connect(url)
    try:
        yield reader, writer
    finally:
        writer.close()


def test_the_fields_aiohttp_reads_back_are_there() -> None:
    # if a new aiohttp renamed them, every 200 would quietly take the ordinary path
    assert AVAILABLE


async def test_the_200_carries_the_headers_aiohttp_would_send(
    listener: tuple[str, list[str]],
) -> None:
    url, _ = listener
    async with connection(url) as (reader, writer):
        writer.write(post(payload("Finished Journey", eventId="wire-1")))
        status, headers, body = await answer(reader)
        # the same event again on the same connection: kept alive, answered as a duplicate
        writer.write(post(payload("Finished Journey", eventId="wire-1")))
        again = await answer(reader)
        # HTTP/1.0 takes aiohttp's own path: its headers are the reference
        writer.write(post(payload("Finished Journey", eventId="wire-2"), version="1.0"))
        reference = await answer(reader)
    assert status == "HTTP/1.1 200 OK"
    assert json.loads(body) == {"status": "accepted", "eventId": "wire-1"}
    assert json.loads(again[2]) == {"status": "duplicate", "eventId": "wire-1"}
    assert reference[0] == "HTTP/1.0 200 OK"
    assert headers["Content-Type"] == reference[1]["Content-Type"] == "application/json"
    assert headers["Server"] == reference[1]["Server"]
    assert headers["Date"].endswith(" GMT")
    assert (
        set(headers)
        == set(reference[1]) - {"Connection"}
        == {
            "Content-Type",
            "Content-Length",
            "Date",
            "Server",
        }
    )


async def test_the_200_is_written_only_once_the_event_is_committed(
    listener: tuple[str, list[str]], tmp_path: Path
) -> None:
    """DESIGN's promise, for the answer that skips aiohttp's response path: read from the
    database file by another connection the moment each 200 arrives."""
    url, _ = listener
    async with connection(url) as (reader, writer):
        for i in range(3):
            writer.write(post(payload("Finished Journey", eventId=f"committed-{i}")))
            status, _, _ = await answer(reader)
            assert status == "HTTP/1.1 200 OK"
            assert event_count(tmp_path / "gateway.db") == i + 1


async def test_connection_close_is_answered_and_honoured(
    listener: tuple[str, list[str]],
) -> None:
    url, _ = listener
    async with connection(url) as (reader, writer):
        writer.write(post(payload("Finished Journey"), close=True))
        status, headers, _ = await answer(reader)
        rest = await asyncio.wait_for(reader.read(), 5)
    assert (status, headers["Connection"], rest) == ("HTTP/1.1 200 OK", "close", b"")


async def test_pipelined_webhooks_are_answered_in_order(
    listener: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, _ = listener
    async with connection(url) as (reader, writer):
        writer.write(
            b"".join(post(payload("Finished Journey", eventId=f"p-{i}")) for i in range(5))
        )
        answers = [await answer(reader) for _ in range(5)]
    assert [json.loads(body)["eventId"] for _, _, body in answers] == [f"p-{i}" for i in range(5)]
    assert event_count(tmp_path / "gateway.db") == 5


async def test_a_client_gone_before_its_answer_leaves_the_event_stored_and_the_listener_up(
    listener: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, _ = listener
    _, writer = await connect(url)
    writer.write(post(payload("Finished Journey", eventId="left-early")))
    await writer.drain()
    writer.transport.abort()
    for _ in range(100):
        if event_count(tmp_path / "gateway.db") == 1:
            break
        await asyncio.sleep(0.02)
    assert event_count(tmp_path / "gateway.db") == 1
    async with connection(url) as (reader, writer):
        writer.write(post(payload("Finished Journey", eventId="next")))
        status, _, _ = await answer(reader)
    assert status == "HTTP/1.1 200 OK"

"""`events list` runs the console's query: the same filters and the same keyset cursor."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from gateway import idwise
from gateway.events import Event, parse_event
from gateway.store.sqlite import SqliteStore
from tests.support.config import base_config, write_config
from tests.support.process import run_cli


def event(number: int) -> Event:
    document = idwise.sample("Finished Journey")
    document["body"].update(eventId=f"e-{number}", referenceNo=f"R{number}")
    return parse_event(json.dumps(document).encode())


def test_events_list_takes_the_console_filters_and_cursor(tmp_path: Path) -> None:
    async def fill() -> None:
        store = SqliteStore(tmp_path / "gateway.db")
        await store.open()
        await store.import_events([event(i) for i in range(30)], time.time() - 7200)
        await store.import_events([event(i) for i in range(30, 40)], time.time())
        await store.close()

    asyncio.run(fill())
    config = str(write_config(tmp_path, base_config(tmp_path)))

    def listed(*flags: str) -> list[dict[str, object]]:
        result = run_cli("events", "list", "-c", config, "--json", *flags)
        assert result.returncode == 0, result.stderr
        rows: list[dict[str, object]] = json.loads(result.stdout)
        return rows

    assert [row["reference_no"] for row in listed("--reference", "R7")] == ["R7"]
    assert [row["id"] for row in listed("--before", "5")] == [4, 3, 2, 1]
    assert len(listed("--until", "1h")) == 30
    assert [row["reference_no"] for row in listed("--text", "r39")] == ["R39"]

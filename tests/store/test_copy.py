"""`store copy`: a SQLite store's history and pending deliveries moved into PostgreSQL,
idempotently (real SQLite file, real server)."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.store import AttemptRecord
from gateway.store.postgres.copy import copy_from_sqlite
from gateway.store.sqlite import SqliteStore
from tests.store.conftest import postgres_store
from tests.store.test_contract import accept, delivered


async def test_copy_keeps_history_and_pending_and_is_idempotent(
    tmp_path: Path, postgres_dsn: str
) -> None:
    source = SqliteStore(tmp_path / "old.db")
    await source.open()
    await accept(source, "m-1", "a", "b", journey="j-1")
    await accept(source, "m-2", "a", journey="j-2")
    await accept(source, "m-1", "a", "b", journey="j-1")  # IDWise retried it: a duplicate
    due = {d.id: d for d in await source.due("a", time.time() + 1, 10, True)}
    first, second = sorted(due)
    await source.record(
        [
            delivered(first),
            AttemptRecord(second, 1, time.time(), 0.2, "retry", reason="http_503",
                          status_code=503, next_attempt_at=time.time() + 30),
        ]
    )  # fmt: skip
    target = postgres_store(postgres_dsn)
    await target.open()
    try:
        copied = await copy_from_sqlite(tmp_path / "old.db", target)
        assert (copied.events, copied.deliveries, copied.attempts) == (2, 3, 2)
        assert copied.duplicates == 1
        counts = await target.webhook_counts(0)
        assert (counts["accepted"], counts["duplicate"]) == (2, 1)  # the console's figures
        rows = {
            (d["dedupe_key"], d["destination"]): (d["status"], d["attempts"])
            for d in await target.list_deliveries()
        }
        assert rows == {
            ("m-1", "a"): ("delivered", 1),
            ("m-1", "b"): ("pending", 0),
            ("m-2", "a"): ("pending", 1),
        }
        (moved,) = [d for d in await target.list_deliveries(status="pending", destination="a")]
        history = (await target.get_delivery(moved["id"]) or {})["attempt_history"]
        assert [(a["number"], a["outcome"], a["status_code"]) for a in history] == [
            (1, "retry", 503)
        ]
        again = await copy_from_sqlite(tmp_path / "old.db", target)
        assert (again.events, again.deliveries, again.attempts, again.skipped_events) == (
            0, 0, 0, 2,
        )  # fmt: skip
        assert again.duplicates == 0 and (await target.webhook_counts(0))["duplicate"] == 1
        await accept(source, "m-3", "a", journey="j-3")
        await accept(source, "m-2", "a", journey="j-2")  # a retry after the first copy
        later = await copy_from_sqlite(tmp_path / "old.db", target)
        assert (later.events, later.deliveries, later.duplicates) == (1, 1, 1)
        assert (await target.webhook_counts(0))["duplicate"] == 2
        assert len(await target.list_events()) == 3
    finally:
        await source.close()
        await target.close()

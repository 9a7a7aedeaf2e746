"""Why group commit: accepted webhooks per second through the real store (one writer thread,
one transaction per batch) beside the straightforward design (one aiosqlite transaction per
request), same SQLite file settings (WAL, synchronous=FULL), same 64 concurrent producers,
same rows (an event and one delivery each). No HTTP: this isolates the commit strategy.

    python bench/commit.py [--events 5000] [--rounds 3] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiosqlite

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import dump, machine

from gateway.events import Event, parse_event
from gateway.store.sqlite import MIGRATIONS, SqliteStore


def events(count: int, prefix: str) -> list[Event]:
    return [
        parse_event(
            json.dumps(
                {
                    "event": "Finished Journey",
                    "body": {
                        "eventId": f"{prefix}-{i}",
                        "journeyId": f"{i % 997:024x}",
                        "referenceNo": f"R{i}",
                        "systemDecision": "Refer",
                    },
                }
            ).encode()
        )
        for i in range(count)
    ]


async def produce(accept, batch: list[Event], concurrency: int) -> float:  # type: ignore[no-untyped-def]
    semaphore = asyncio.Semaphore(concurrency)

    async def one(event: Event) -> None:
        async with semaphore:
            await accept(event)

    start = time.perf_counter()
    await asyncio.gather(*(one(e) for e in batch))
    return len(batch) / (time.perf_counter() - start)


async def group_commit(db: Path, batch: list[Event], concurrency: int) -> float:
    store = SqliteStore(db)
    await store.open()
    try:
        return await produce(
            lambda e: store.accept(e, [("sink", "rule")], ["rule"], "127.0.0.1", {}),
            batch,
            concurrency,
        )
    finally:
        await store.close()


async def per_request(db: Path, batch: list[Event], concurrency: int) -> float:
    conn = await aiosqlite.connect(db, isolation_level=None)
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=FULL")
    for migration in MIGRATIONS:
        for statement in migration.split(";"):
            if statement.strip():
                await conn.execute(statement)
    lock = asyncio.Lock()  # one connection: transactions must not interleave

    async def accept(event: Event) -> None:
        async with lock:
            await conn.execute("BEGIN IMMEDIATE")
            cursor = await conn.execute(
                "INSERT OR IGNORE INTO events (dedupe_key, event_type, event_id, journey_key,"
                " reference_no, received_at, source_ip, headers, rules, raw)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    event.dedupe_key,
                    event.type,
                    event.event_id,
                    event.journey_key,
                    event.reference_no,
                    time.time(),
                    "127.0.0.1",
                    "{}",
                    '["rule"]',
                    event.raw,
                ),
            )
            await conn.execute(
                "INSERT INTO deliveries (event_row, destination, rule, journey_key, queued_at,"
                " next_attempt_at, updated_at) VALUES (?,?,?,?,?,?,?)",
                (cursor.lastrowid, "sink", "rule", event.journey_key, 1.0, 1.0, 1.0),
            )
            await conn.execute("COMMIT")

    try:
        return await produce(accept, batch, concurrency)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    grouped: list[float] = []
    single: list[float] = []
    for round_number in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            batch = events(args.events, f"g{round_number}")
            grouped.append(asyncio.run(group_commit(Path(tmp) / "g.db", batch, args.concurrency)))
            single.append(asyncio.run(per_request(Path(tmp) / "s.db", batch, args.concurrency)))
        print(
            f"round {round_number + 1}: group commit {grouped[-1]:,.0f}/s, "
            f"one transaction per request {single[-1]:,.0f}/s",
            flush=True,
        )
    ratio = statistics.median(grouped) / statistics.median(single)
    print(f"\nmachine: {machine()}")
    print(
        f"group commit:                {statistics.median(grouped):>9,.0f} accepts/s "
        f"(spread {min(grouped):,.0f}-{max(grouped):,.0f})"
    )
    print(
        f"one transaction per request: {statistics.median(single):>9,.0f} accepts/s "
        f"(spread {min(single):,.0f}-{max(single):,.0f})"
    )
    print(f"group commit is {ratio:.1f}x faster at {args.concurrency} concurrent requests")
    dump("commit", {"machine": machine(), "group": grouped, "per_request": single, "ratio": ratio})


if __name__ == "__main__":
    main()

"""What a test's gateway has stored, read through the store's own query methods
(`SqliteStore.list_deliveries`, `get_delivery`, `list_events`, `get_event`, ...) instead of
SQL, so a schema migration changes the store and not the tests. Each call opens the
database the way the CLI does, runs one query and closes it; it works from a synchronous test
or from inside a running event loop (the query then runs on a thread of its own). Does I/O.

Raw SQL stays only in tests about the schema itself (tests/test_store.py) and in tests that
inject a fault (hold a lock, corrupt the file): each says so where it does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from gateway.store.sqlite import SqliteStore
from tests.support.waiting import async_wait_until

T = TypeVar("T")

ALL = 1_000_000  # a `limit` no test reaches


def query(db: Path, run: Callable[[SqliteStore], Awaitable[T]]) -> T:
    """`await run(store)` on an opened store over `db`, from sync code or a running loop."""
    if not db.exists():  # opening would create (and migrate) it beside a starting gateway
        raise AssertionError(f"no database at {db}")

    async def opened() -> T:
        store = SqliteStore(db, busy_timeout=5.0)
        await store.open()
        try:
            return await run(store)
        finally:
            await store.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(opened())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, opened()).result()


# ------------------------------------------------------------------------------ deliveries
def deliveries(db: Path, **filters: Any) -> list[dict[str, Any]]:
    """Deliveries (as `deliveries list --json` shows them), oldest first; `filters` as for
    `Store.list_deliveries` (status, destination, event_type, journey, ...)."""
    found = query(db, lambda store: store.list_deliveries(limit=ALL, **filters))
    return sorted(found, key=lambda d: d["id"])


def delivery(db: Path, delivery_id: int) -> dict[str, Any]:
    """One delivery with its `attempt_history` (as `deliveries show --json`)."""
    found = query(db, lambda store: store.get_delivery(delivery_id))
    assert found is not None, f"no delivery {delivery_id}"
    return found


def statuses(db: Path) -> dict[str, str]:
    """destination -> status, for a database holding one delivery per destination."""
    found = deliveries(db)
    chosen = {d["destination"]: d["status"] for d in found}
    assert len(chosen) == len(found), f"more than one delivery per destination: {found}"
    return chosen


def status_counts(db: Path, **filters: Any) -> dict[str, int]:
    """status -> number of deliveries."""
    counts: dict[str, int] = {}
    for d in deliveries(db, **filters):
        counts[d["status"]] = counts.get(d["status"], 0) + 1
    return counts


def attempts(db: Path, destination: str | None = None) -> list[tuple[Any, ...]]:
    """(number, outcome, reason, status_code) of every attempt (of deliveries to
    `destination`, if given), delivery by delivery, each in the order it was made."""

    async def run(store: SqliteStore) -> list[tuple[Any, ...]]:
        found = []
        listed = await store.list_deliveries(destination=destination, limit=ALL)
        for listed_delivery in sorted(listed, key=lambda d: d["id"]):
            shown = await store.get_delivery(listed_delivery["id"])
            assert shown is not None
            found += [
                (a["number"], a["outcome"], a["reason"], a["status_code"])
                for a in shown["attempt_history"]
            ]
        return found

    return query(db, run)


def attempt_history(db: Path, destination: str | None = None) -> list[dict[str, Any]]:
    """Every attempt as `deliveries show --json` lists it (duration, detail, output ...)."""

    async def run(store: SqliteStore) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        listed = await store.list_deliveries(destination=destination, limit=ALL)
        for listed_delivery in sorted(listed, key=lambda d: d["id"]):
            shown = await store.get_delivery(listed_delivery["id"])
            assert shown is not None
            found += shown["attempt_history"]
        return found

    return query(db, run)


async def wait_status(
    db: Path,
    wanted: str,
    count: int = 1,
    timeout: float = 10.0,  # noqa: ASYNC109 - a deadline for polling, not for one await
    destination: str | None = None,
) -> None:
    """Wait until `count` deliveries (of `destination`, if given) have status `wanted`."""

    def reached() -> bool:
        return len(deliveries(db, status=wanted, destination=destination)) >= count

    await async_wait_until(
        reached,
        timeout,
        f"{count} deliveries {wanted}" + (f" to {destination}" if destination else ""),
    )


# ---------------------------------------------------------------------------------- events
def events(db: Path, **filters: Any) -> list[dict[str, Any]]:
    """Events (as `events list --json`), oldest first; `filters` as for `Store.list_events`."""
    found = query(db, lambda store: store.list_events(limit=ALL, **filters))
    return sorted(found, key=lambda e: e["id"])


def event(db: Path, key: str) -> dict[str, Any]:
    """One event with headers, payload and deliveries (as `events show --json`)."""
    found = query(db, lambda store: store.get_event(key))
    assert found is not None, f"no event {key}"
    return found


def raw_event(db: Path, key: str) -> bytes:
    """The bytes stored for the event `key` (what a replay or re-route sends)."""
    found = query(db, lambda store: store.events_for_reroute(event=key))
    assert len(found) == 1, found
    return found[0][1]


def stored_keys(db: Path) -> set[str]:
    return {e["dedupe_key"] for e in events(db)}


def event_count(db: Path) -> int:
    return len(events(db))


def routes(db: Path) -> dict[str, set[str]]:
    """dedupe key -> destinations its rules chose (one delivery each)."""
    chosen: dict[str, set[str]] = {}
    for d in deliveries(db):
        chosen.setdefault(d["dedupe_key"], set()).add(d["destination"])
    return chosen

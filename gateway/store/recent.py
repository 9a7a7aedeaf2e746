"""The events this process accepted a moment ago, kept parsed for their first deliveries.
Pure (state in memory, no I/O); both store backends hold one.
"""

from __future__ import annotations

from typing import Any

from gateway.events import Event


class RecentEvents:
    """The events this process accepted last, by row, parsed, until each of their deliveries
    has been handed out once. A delivery that goes out right after its event was accepted
    (the usual case) takes the event from here instead of reading its JSON again: 13 us for
    a small payload, more for a large one, per delivery. A retry, a backlog, a restart or
    another replica's event reads the stored bytes.

    Small on purpose: bounded by the bytes received, oldest out first, and no payload over
    16 KiB (a parsed document can take 25 times its JSON's size). Events that stayed here
    for thousands of webhooks (a destination that is not being served) were promoted to the
    collector's oldest generation and made full collections frequent: 10% more CPU per
    webhook in a measured run. An event is handed out only for the very bytes stored under
    its row (SQLite reuses the row ids of pruned events). Events are frozen and only read
    after ingest."""

    __slots__ = ("_bytes", "_entries", "_limit")

    #: payloads larger than this are parsed again at delivery (IDWise's are a few KiB)
    LARGEST = 16 * 1024

    def __init__(self, limit: int = 128 * 1024) -> None:
        self._entries: dict[int, list[Any]] = {}  # row -> [event, deliveries not handed out]
        self._bytes = 0
        self._limit = limit

    def add(self, row: int, event: Event, deliveries: int) -> None:
        size = len(event.raw)
        if size > self.LARGEST or deliveries < 1:
            return
        self._drop(row)
        entries = self._entries
        entries[row] = [event, deliveries]
        self._bytes += size
        while self._bytes > self._limit:
            self._drop(next(iter(entries)))

    def take(self, row: int, raw: bytes) -> Event | None:
        """The event accepted under `row`, if it is the one stored there now; once each of
        its deliveries has taken it, it is forgotten."""
        entry = self._entries.get(row)
        if entry is None:
            return None
        event: Event = entry[0]
        if event.raw != raw:
            self._drop(row)
            return None
        entry[1] -= 1
        if entry[1] <= 0:
            self._drop(row)
        return event

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, row: int) -> None:
        entry = self._entries.pop(row, None)
        if entry is not None:
            self._bytes -= len(entry[0].raw)

"""What the store hands back and takes in, whatever the backend. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from gateway.events import Event


class Accepted(NamedTuple):
    """One accepted webhook. A NamedTuple (immutable like the dataclasses here): the writer
    makes one per webhook inside its transaction, at a third of a frozen dataclass's cost."""

    status: str  # "accepted" | "duplicate"
    event_row: int
    delivery_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class DueDelivery:
    id: int
    event_row: int
    destination: str
    attempts: int
    queued_at: float
    raw: bytes
    rule: str | None
    attempt_base: int = 0  # attempts made before the last replay (not counted in the budget)
    claim: int = 0  # the fencing token of this replica's claim (0: a store without claims)
    #: the event as this process parsed it at ingest, when it was accepted a moment ago
    #: (see RecentEvents); None: the attempt reads `raw` again
    event: Event | None = field(default=None, compare=False, repr=False)


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


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    delivery_id: int
    number: int
    started_at: float
    duration: float
    outcome: str  # delivered | retry | dead
    reason: str | None = None
    status_code: int | None = None
    detail: str | None = None
    output: str | None = None
    next_attempt_at: float | None = None  # for outcome == "retry"
    claim: int = 0  # the claim's fencing token, from DueDelivery.claim
    counted: bool = True  # False: kept in the history, not charged to max_attempts


@dataclass(frozen=True, slots=True, order=True)
class Requeued:
    """A delivery a replay made due: which one, of which event, to which destination."""

    delivery_id: int
    event_row: int
    destination: str


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What the events list (console and CLI) can ask for; None means any."""

    event_type: str | None = None
    journey: str | None = None
    reference: str | None = None
    #: pending | delivered | dead (events with such a delivery), unrouted (no delivery),
    #: duplicate (received more than once)
    outcome: str | None = None
    destination: str | None = None
    since: float | None = None
    until: float | None = None
    text: str | None = None  # a substring of the payload (case-insensitive)

    @property
    def unindexed(self) -> bool:
        """Filters that no index serves: the console bounds their scan (see page_events)."""
        return bool(
            self.event_type
            or self.outcome in ("delivered", "unrouted")
            or self.destination
            or self.text
        )


@dataclass(frozen=True, slots=True)
class EventPage:
    rows: list[dict[str, Any]]
    #: cursor of the next (older) page: ids below it; None when nothing older matches
    next_before: int | None
    #: set when a scan window ended the search early: the lowest event id looked at
    searched_down_to: int | None = None

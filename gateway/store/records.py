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

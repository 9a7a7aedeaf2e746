"""SQL of the events list that reads the same in SQLite and PostgreSQL (fragments without
placeholders), and the page made from its rows. Pure.

Each backend's `page_events` builds its own WHERE (placeholders, index hints and text
search differ by dialect) around these.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.store.records import EventPage

#: the list's "outcome" filter: literal statuses, so the partial indexes on pending and dead
#: deliveries serve them (a bound parameter cannot prove an index's WHERE); the name comes
#: from a fixed set, never from the request as text
OUTCOME_CLAUSES: Mapping[str, str] = {
    "pending": "e.id IN (SELECT event_row FROM deliveries WHERE status = 'pending')",
    "dead": "e.id IN (SELECT event_row FROM deliveries WHERE status = 'dead')",
    "delivered": (
        "EXISTS (SELECT 1 FROM deliveries s WHERE s.event_row = e.id AND s.status = 'delivered')"
    ),
    "unrouted": "NOT EXISTS (SELECT 1 FROM deliveries s WHERE s.event_row = e.id)",
    "duplicate": "e.id IN (SELECT event_row FROM duplicates)",
}

#: one row of the list: the event and its delivery counts
SUMMARY_COLUMNS = (
    "e.id, e.dedupe_key, e.event_type, e.journey_key, e.reference_no, e.received_at,"
    " e.source_ip, e.rules,"
    " (SELECT count(*) FROM deliveries d WHERE d.event_row = e.id) AS deliveries,"
    " (SELECT count(*) FROM deliveries d WHERE d.event_row = e.id"
    " AND d.status = 'pending') AS pending,"
    " (SELECT count(*) FROM deliveries d WHERE d.event_row = e.id"
    " AND d.status = 'dead') AS dead"
)


def event_page(rows: Sequence[Any], limit: int, searched_down_to: int | None) -> EventPage:
    """The page from up to `limit + 1` rows, newest first (the extra row says there is an
    older page). `searched_down_to`: the lowest id a scan window looked at, if one ended
    the search early."""
    found = [{**dict(r), "rules": json.loads(r["rules"])} for r in rows[:limit]]
    if len(rows) > limit:
        return EventPage(found, found[-1]["id"])
    if searched_down_to:
        return EventPage(found, searched_down_to, searched_down_to=searched_down_to)
    return EventPage(found, None)

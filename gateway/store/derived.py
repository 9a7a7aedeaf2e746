"""Store calls that are the same on every backend because they are other calls in another
shape: the CLI's event listing is one page of `page_events`, `replay` counts `requeue`.
Pure (the I/O is the backend's)."""

from __future__ import annotations

from typing import Any

from gateway.store.records import EventFilter, EventPage, Requeued


class DerivedCalls:
    """Mixed into each backend's store class, after the classes that implement the calls
    below (which these stubs only declare)."""

    async def page_events(
        self,
        query: EventFilter,
        *,
        before: int | None = None,
        limit: int = 50,
        window: int | None = None,
    ) -> EventPage:
        raise NotImplementedError

    async def requeue(
        self,
        *,
        delivery_id: int | None = None,
        event: str | None = None,
        dead: bool = False,
        destination: str | None = None,
        since: float | None = None,
        pending: bool = False,
    ) -> list[Requeued]:
        raise NotImplementedError

    async def list_events(
        self,
        *,
        event_type: str | None = None,
        since: float | None = None,
        journey: str | None = None,
        status: str | None = None,
        destination: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Newest first. `status` / `destination`: events with such a delivery."""
        query = EventFilter(
            event_type=event_type,
            since=since,
            journey=journey,
            outcome=status,
            destination=destination,
        )
        return (await self.page_events(query, limit=limit)).rows

    async def replay(
        self,
        *,
        delivery_id: int | None = None,
        event: str | None = None,
        dead: bool = False,
        destination: str | None = None,
        since: float | None = None,
        pending: bool = False,
    ) -> int:
        requeued = await self.requeue(
            delivery_id=delivery_id,
            event=event,
            dead=dead,
            destination=destination,
            since=since,
            pending=pending,
        )
        return len(requeued)

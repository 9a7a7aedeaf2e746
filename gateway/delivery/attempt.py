"""One attempt of one delivery: send, classify the result, decide what follows, and the
attempt's one log line and metric. Does I/O (the destination's send)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.destinations.base import Destination, SendContext, Sent, local_shortage
from gateway.destinations.client import DestinationClients, HttpClient
from gateway.errors import (
    DeliveryError,
    LocalResourceError,
    PayloadError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from gateway.events import Event, parse_stored
from gateway.logs import log_fields
from gateway.retry import decide
from gateway.store import AttemptRecord, DueDelivery

if TYPE_CHECKING:
    from gateway.metrics import Metrics

log = logging.getLogger("gateway.delivery")


@dataclass(frozen=True, slots=True)
class Attempter:
    """What every attempt needs from the engine: the HTTP client, the clock and
    the randomness (both injected, so backoff is testable without waiting), the metrics."""

    client: HttpClient
    clock: Callable[[], float]
    rand: Callable[[], float]
    metrics: Metrics | None = None
    #: one client (pool of connections) per destination; without it, `client` for all
    clients: DestinationClients | None = None

    async def attempt(self, destination: Destination, job: DueDelivery) -> AttemptRecord:
        """Send, classify, decide. Never raises DeliveryError."""
        number = job.attempts + 1
        started = self.clock()
        t0 = time.perf_counter()
        event, sent, error = await self._send(destination, job, number)
        counted = True
        if error is None:
            assert sent is not None
            outcome, reason, next_at = "delivered", None, None
            status, detail, output = sent.status, sent.detail, sent.output
        else:
            budget_used = number - job.attempt_base  # replays grant a fresh max_attempts budget
            decision = decide(
                destination.policy, budget_used, job.queued_at, self.clock(), error, self.rand()
            )
            outcome, reason, next_at = decision.outcome, decision.reason, decision.next_attempt_at
            status, detail, output = error.status, error.detail, error.output
            counted = decision.counted
        record = AttemptRecord(
            delivery_id=job.id,
            number=number,
            started_at=started,
            duration=time.perf_counter() - t0,
            outcome=outcome,
            reason=reason,
            status_code=status,
            detail=detail,
            output=output,
            next_attempt_at=next_at,
            claim=job.claim,  # goes with the outcome (a shared store checks it)
            counted=counted,
        )
        self._report(destination, job, event, record)
        return record

    async def _send(
        self, destination: Destination, job: DueDelivery, number: int
    ) -> tuple[Event | None, Sent | None, DeliveryError | None]:
        event = None
        try:
            event = job.event or parse_stored(job.raw)
            clients = self.clients
            client = self.client if clients is None else clients.get(destination.name)
            context = SendContext(client, job.id, number, self.clock)
            return event, await destination.send(event, context), None
        except DeliveryError as exc:
            return event, None, exc
        except PayloadError as exc:  # a stored body that no longer parses cannot be sent
            return event, None, PermanentDeliveryError("unparsable", str(exc))
        except Exception as exc:  # a bug in a destination: retry rather than lose the event
            if local_shortage(exc):
                return event, None, LocalResourceError("local_resources", str(exc)[:200])
            log.exception(
                "destination raised unexpectedly",
                extra={"fields": {"destination": destination.name}},
            )
            return event, None, RetryableDeliveryError("internal", type(exc).__name__)

    def _report(
        self, destination: Destination, job: DueDelivery, event: Event | None, record: AttemptRecord
    ) -> None:
        fields = {
            "msg_kind": "delivery",
            "delivery": job.id,
            "eventId": event.dedupe_key if event else None,
            "event_type": event.type if event else None,
            "journeyId": event.journey_key if event else None,
            "rule": job.rule,
            "destination": destination.name,
            "attempt": record.number,
            "outcome": record.outcome,
            "reason": record.reason,
            "status": record.status_code,
            "duration_ms": round(record.duration * 1000, 1),
        }
        if record.next_attempt_at is not None:
            fields["next_attempt_in"] = round(record.next_attempt_at - self.clock(), 3)
        level = logging.WARNING if record.outcome == "dead" else logging.INFO
        log_fields(log, level, "delivery attempt", fields)
        if self.metrics is not None:
            self.metrics.delivery(destination.name, record.outcome, record.duration)

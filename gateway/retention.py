"""Retention: events older than `storage.retention` whose deliveries are all finished are
pruned in small batches, yielding to ingest between them. Does I/O (through the store)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gateway.errors import StoreError
from gateway.store import Store

log = logging.getLogger("gateway")

RETENTION_INTERVAL = 60.0


async def prune_once(store: Store, retention: float) -> int:
    cutoff = time.time() - retention
    total = 0
    while (removed := await store.prune(cutoff)) > 0:
        total += removed
        await asyncio.sleep(0.01)  # let ingest commits in between
    if total:
        log.info("retention pruned events", extra={"fields": {"events": total}})
    return total


async def prune_forever(store: Store, retention: Callable[[], float]) -> None:
    """`retention` is read before every pass: a reload may change it."""
    while True:
        try:
            await prune_once(store, retention())
        except StoreError as exc:
            log.warning("retention pass failed", extra={"fields": {"reason": exc.reason}})
        await asyncio.sleep(RETENTION_INTERVAL)

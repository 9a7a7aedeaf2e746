"""Reading the console's query strings and forms into typed values. Pure."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime

from gateway import idwise
from gateway.units import parse_duration


class FormError(ValueError):
    """A field a person typed that cannot be understood; shown beside the form."""


def moment(text: str | None, now: float | None = None) -> float | None:
    """`2h` (that long ago), an ISO time, or what an <input type=datetime-local> sends
    (read as UTC, as every time on the console is shown)."""
    if not text or not text.strip():
        return None
    text = text.strip()
    try:
        return (time.time() if now is None else now) - parse_duration(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FormError(
            f"'{text}' is neither a duration (2h) nor a time (2026-01-31T14:00)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def text(fields: Mapping[str, str], name: str) -> str | None:
    value = fields.get(name, "").strip()
    return value or None


def integer(fields: Mapping[str, str], name: str) -> int | None:
    value = fields.get(name, "").strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit()):
        raise FormError(f"{name}: '{value}' is not a number")
    return int(value)


def event_type(fields: Mapping[str, str], name: str = "type") -> str | None:
    value = text(fields, name)
    return (idwise.find_event_type(value) or value) if value else None

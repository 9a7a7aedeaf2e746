"""Secret values and the one redaction point for everything that leaves the process. Pure.

Every value that comes from a secret-bearing config key or from `${...}` interpolation is
registered here; log lines, `check` output and error texts pass through `redact`.
"""

from __future__ import annotations

import json
import threading
from typing import Any

MASK = "****"


class Secret:
    """A string whose repr and str never show it. Call `reveal()` where it must be used."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    __str__ = __repr__


_lock = threading.Lock()
_known: tuple[str, ...] = ()  # longest first, so a secret containing another is masked whole
_escaped: tuple[str, ...] = ()  # their JSON-escaped forms, for the pre-check of JSON text
# Very short values would mask ordinary words; they are never printed on purpose, but only
# values of 4+ characters are scrubbed from free text.
_MIN_SCRUB = 4


def register(*values: str) -> None:
    global _known, _escaped
    fresh = {str(v) for v in values if len(v) >= _MIN_SCRUB} - set(_known)
    if fresh:
        with _lock:
            known = sorted(set(_known) | fresh, key=len, reverse=True)
            _known = tuple(known)
            _escaped = tuple({json.dumps(v, ensure_ascii=False)[1:-1] for v in known} | set(known))


def registry_state() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The registered secrets, to restore later (tests: one config's secrets must not mask
    another test's output)."""
    return _known, _escaped


def restore_registry(state: tuple[tuple[str, ...], tuple[str, ...]]) -> None:
    global _known, _escaped
    with _lock:
        _known, _escaped = state


def redact(text: str) -> str:
    for value in _known:
        if value in text:
            text = text.replace(value, MASK)
    return text


_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)  # one encoder: this runs per line


def redact_json(value: Any) -> str:
    """JSON text of `value` with secrets masked inside string values only, so the output
    stays valid JSON and keys and literals (true, numbers) are never touched."""
    text = _ENCODER.encode(value)
    if not any(secret in text for secret in _escaped):
        return text
    return _ENCODER.encode(_redact_strings(value))


def _redact_strings(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_strings(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_strings(item) for item in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact(str(value))

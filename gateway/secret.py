"""Secret values and the one redaction point for everything that leaves the process. Pure.

Every value that comes from a secret-bearing config key or from `${...}` interpolation is
registered here; log lines, `check` output and error texts pass through `redact`.
"""

from __future__ import annotations

import threading

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
_known: frozenset[str] = frozenset()
# Short values would mask ordinary words in logs ("true", port numbers); they are still
# never printed on purpose, but only values of 4+ characters are scrubbed from free text.
_MIN_SCRUB = 4


def register(*values: str) -> None:
    global _known
    fresh = {v for v in values if len(v) >= _MIN_SCRUB}
    if fresh - _known:
        with _lock:
            _known = _known | fresh


def redact(text: str) -> str:
    known = _known
    if not known:
        return text
    for value in sorted(known, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return text

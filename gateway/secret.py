"""Secret values and the redactor, the one redaction point for everything that leaves the
process. Pure.

Every value that comes from a secret-bearing config key or from `${...}` interpolation is
registered with the config's `Redactor`; log lines, `check` output and error texts pass
through it. There is no process-wide registry: whoever prints holds a redactor.
"""

from __future__ import annotations

import json
import threading
from _json import encode_basestring, make_encoder
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


class Shown(str):
    """Text a destination already masked for display, part by part (a URL whose host and
    path are shown and whose credentials are not): the redactor leaves it as it is, where
    it would otherwise mask the whole of a URL that is registered as a secret."""

    __slots__ = ()


# Very short values would mask ordinary words; they are never printed on purpose, but only
# values of 4+ characters are scrubbed from free text.
_MIN_SCRUB = 4
# One C encoder, made once: JSONEncoder.encode builds a new one for every call, a quarter of
# the cost of a log line's JSON. Same output as json.dumps(ensure_ascii=False, default=str);
# no circular check (None): the values are our own log fields, and a cycle still ends in
# RecursionError, not a hang.
_ENCODER = make_encoder(None, str, encode_basestring, None, ": ", ", ", False, False, True)


def _to_json(value: Any) -> str:
    return "".join(_ENCODER(value, 0))


class Redactor:
    """The one redaction point: the secret values a process knows, masked in everything that
    leaves it. The config loader registers each credential as it reads it; the runtime owns
    the redactor and hands it to logging, the CLI and the destinations. Values are only ever
    added (a rotated secret stays masked for the life of the process)."""

    __slots__ = ("_escaped", "_known", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: tuple[str, ...] = ()  # longest first: a secret holding another is masked whole
        self._escaped: tuple[str, ...] = ()  # JSON-escaped forms, for the pre-check of JSON text

    def register(self, *values: str) -> None:
        fresh = {str(v) for v in values if len(v) >= _MIN_SCRUB} - set(self._known)
        if fresh:
            with self._lock:
                known = sorted(set(self._known) | fresh, key=len, reverse=True)
                escaped = {json.dumps(v, ensure_ascii=False)[1:-1] for v in known}
                # one tuple swap each: readers on other threads never see half an update
                self._escaped = tuple(escaped | set(known))
                self._known = tuple(known)

    def adopt(self, other: Redactor) -> None:
        """Take every value `other` knows (a reloaded config's secrets)."""
        self.register(*other._known)

    def redact(self, text: str) -> str:
        for value in self._known:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def redact_json(self, value: Any) -> str:
        """JSON text of `value` with secrets masked inside string values only, so the output
        stays valid JSON and keys and literals (true, numbers) are never touched."""
        text = _to_json(value)
        for secret in self._escaped:  # a loop, not any(): no generator per log line
            if secret in text:
                return _to_json(self._redact_strings(value))
        return text

    def _redact_strings(self, value: Any) -> Any:
        if isinstance(value, Shown):
            return value
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {key: self._redact_strings(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._redact_strings(item) for item in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.redact(str(value))

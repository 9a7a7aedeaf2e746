"""What the commands print: one `Output` per command (through the loaded config's
redactor), tables, times for people, and `CommandError` for a one-line failure. No I/O
beyond standard output and error."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.logs import one_line
from gateway.secret import Redactor

#: JSON text keeps these raw (ensure_ascii=False): C1 controls, DEL and the bidi overrides
#: can still drive a terminal, so they become \u escapes (the JSON stays valid)
_JSON_UNSAFE = re.compile(r"[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class CommandError(Exception):
    """A command failed in a way the user can fix: printed as one line, never a traceback."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Output:
    """Standard output and error for one command, through the redactor of the config it
    loads (every credential that config holds is masked in whatever is printed)."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        self.redactor = redactor or Redactor()

    def line(self, text: str = "") -> None:
        print(self.redactor.redact(text))

    def json(self, value: Any) -> None:
        text = self.redactor.redact_json(value)
        pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        print(_JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", pretty))

    def error(self, text: str) -> None:
        print(self.redactor.redact(text), file=sys.stderr)

    def table(self, rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
        """Rows as aligned columns; every cell on one line (payload text is escaped, so a
        value can neither break the table nor send a terminal escape sequence)."""
        if not rows:
            self.line("(none)")
            return
        cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
        widths = [
            max(len(title), *(len(c[i]) for c in cells)) for i, (_, title) in enumerate(columns)
        ]
        self.line("  ".join(t.ljust(widths[i]) for i, (_, t) in enumerate(columns)).rstrip())
        for c in cells:
            self.line("  ".join(value.ljust(widths[i]) for i, value in enumerate(c)).rstrip())


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    return one_line(str(value))


def utc_time(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


def local_time(value: float | None, now: float | None = None) -> str:
    """`2026-12-02 15:04:05 +0100 (3m ago)`: the local time and how long ago (or from now)."""
    if value is None:
        return "-"
    moment = datetime.fromtimestamp(value).astimezone()
    return f"{moment.strftime('%Y-%m-%d %H:%M:%S %z')} ({age(value, now)})"


def age(value: float, now: float | None = None) -> str:
    """A short human span: `12s ago`, `3m ago`, `5h ago`, `2d ago`, `in 40s`."""
    delta = (time.time() if now is None else now) - value
    span = abs(delta)
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
        if span >= seconds:
            text = f"{int(span // seconds)}{unit}"
            break
    else:
        text = f"{int(span)}s"
    return f"{text} ago" if delta >= 0 else f"in {text}"


def seconds(value: float | None) -> str:
    """A duration for people: `120 ms`, `3.2 s`."""
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"

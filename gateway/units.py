"""Durations, sizes and rates as written in config files. Pure."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.I)
_SIZE_FACTORS = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h|d)\s*$")

DURATION_HINT = "write a duration like 500ms, 5s, 15m, 24h, 30d or a number of seconds"


def parse_duration(value: object) -> float:
    """Seconds. Raises ValueError with a hint."""
    if isinstance(value, bool):
        raise ValueError(DURATION_HINT)
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError("a duration must be a finite number of seconds, 0 or more")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _FACTORS[match.group(2)]
    raise ValueError(f"'{value}' is not a duration; {DURATION_HINT}")


def parse_size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            unit = match.group(2).lower() if match.group(2) else None
            return int(match.group(1)) * _SIZE_FACTORS[unit]
    raise ValueError(f"'{value}' is not a size; write bytes or e.g. 64KiB, 1GB")


def parse_rate(value: object) -> tuple[float, float]:
    """ "1/s", "30/m", "5/10s" -> (count, per seconds)."""
    if isinstance(value, str):
        match = _RATE.match(value)
        if match:
            count = float(match.group(1))
            per = float(match.group(2) or 1) * _FACTORS[match.group(3)]
            if count > 0 and per > 0:
                return count, per
    raise ValueError(f"'{value}' is not a rate; write e.g. 1/s, 30/m or 5/10s")

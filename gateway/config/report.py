"""What the loader found wrong with a config, and which parts later checks must skip. Pure.

Every step of `config.load` records its findings in one `Report`: each becomes a `Problem`
(defined in gateway/errors.py, because `ConfigError` carries them; it prints as
`FILE:LINE: path: message`). The report also remembers the parts that already failed, so one
mistake is reported once while every other problem is still found in the same run. The
did-you-mean hints for names and keys live here too.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from gateway.config.source import Path as KeyPath
from gateway.config.source import Source, format_path
from gateway.errors import Problem


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    # parts that already failed (schema or ${...}) are left out of the later checks, so one
    # mistake is reported once and every other problem still gets found in the same run
    unresolved: set[tuple[str, KeyPath]] = field(default_factory=set)
    broken_sections: set[str] = field(default_factory=set)
    broken_destinations: set[str] = field(default_factory=set)
    broken_rules: set[tuple[str, int]] = field(default_factory=set)

    def error(self, source: Source, path: KeyPath, message: str, severity: str = "error") -> None:
        if (source.file, path) in self.unresolved:
            return  # the ${...} there already failed; anything else about it is noise
        self.problems.append(
            Problem(source.file, source.line_of(path), format_path(path), message, severity)
        )

    def warn(self, source: Source, path: KeyPath, message: str) -> None:
        self.error(source, path, message, "warning")

    def file_problem(self, file: str, line: int, path: KeyPath, message: str) -> None:
        """A problem with a file that has no parsed `Source` (unreadable, invalid YAML)."""
        self.problems.append(Problem(file, line, format_path(path), message))

    @property
    def has_errors(self) -> bool:
        return any(p.severity == "error" for p in self.problems)

    def warnings(self) -> tuple[str, ...]:
        return tuple(str(p) for p in self.problems if p.severity == "warning")


def nearest(name: str, candidates: list[str], prefix: str = "") -> str:
    """' (did you mean X?)' for the closest candidate, or '' if none is close."""
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if not match:
        lowered = {c.lower(): c for c in candidates}
        if name.lower() in lowered:
            match = [lowered[name.lower()]]
    return f" (did you mean {prefix}{match[0]}?)" if match else ""


def split_key(key: str) -> KeyPath:
    """A destination's relative key ("headers.X-Token", "blocks[0].text") -> a key path."""
    parts: list[str | int] = []
    for piece in key.replace("]", "").split("."):
        name, _, index = piece.partition("[")
        if name:
            parts.append(name)
        if index:
            parts.append(int(index))
    return tuple(parts)

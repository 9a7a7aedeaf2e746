"""JSON Schema validation of config and rules files (gateway/config/schema.json), and
jsonschema's errors turned into messages that say how to fix them.

Reads schema.json from the package once; otherwise pure. A part of the data that fails is
set aside (recorded in the `Report` and removed), so later steps never see it.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema

from gateway.config.report import Report, nearest
from gateway.config.source import Path as KeyPath
from gateway.config.source import Source

_SCHEMA: dict[str, Any] | None = None

#: sections that hold a list; the rest hold a mapping (what an invalid one is replaced by)
_LIST_SECTIONS = ("rules", "rules_files", "unmatched")


def config_schema() -> dict[str, Any]:
    global _SCHEMA
    if _SCHEMA is None:
        text = resources.files("gateway.config").joinpath("schema.json").read_text()
        _SCHEMA = json.loads(text)
    return _SCHEMA


def rules_file_schema() -> dict[str, Any]:
    """The schema of a file named by `rules_files` (rules and x- keys only)."""
    schema = config_schema()
    return {**schema["$defs"]["rules_file"], "$defs": schema["$defs"]}


def validate(source: Source, schema: dict[str, Any], report: Report) -> bool:
    """Report schema errors, then set the invalid parts aside. False if the file is
    unusable as a whole."""
    validator = jsonschema.Draft202012Validator(schema)
    usable = True
    for err in sorted(
        validator.iter_errors(source.data), key=lambda e: list(map(str, e.absolute_path))
    ):
        for path, message in describe(err):
            report.error(source, path, message)
            if err.validator == "additionalProperties" and _drop_rule_key(source, path):
                continue  # the rest of that rule is still checked, in the same run
            usable = _set_aside(source, path, report) and usable
    return usable


def _drop_rule_key(source: Source, path: KeyPath) -> bool:
    """An unknown key in a rule (`rules[2].too`) is removed, reported once, and the rule kept
    for the later checks, so its other problems show in the same run. A rule that misses a
    required key is still set aside by its own schema error."""
    if len(path) != 3 or path[0] != "rules" or not isinstance(path[1], int):
        return False
    rules = source.data.get("rules")
    if not isinstance(rules, list) or not isinstance(rules[path[1]], dict):
        return False
    rules[path[1]].pop(path[2], None)
    return True


def _set_aside(source: Source, path: KeyPath, report: Report) -> bool:
    if not path:
        return False
    head = path[0]
    if head == "rules" and len(path) > 1 and isinstance(path[1], int):
        report.broken_rules.add((source.file, path[1]))
    elif head == "destinations" and len(path) > 1:
        report.broken_destinations.add(str(path[1]))
        source.data["destinations"].pop(path[1], None)
    elif isinstance(head, str) and head in source.data:
        report.broken_sections.add(head)
        source.data[head] = [] if head in _LIST_SECTIONS else {}
    return True


_TYPE_NAMES = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "null",
}


def describe(err: jsonschema.ValidationError) -> list[tuple[KeyPath, str]]:
    """jsonschema's error -> (key path, message with a fix). Never quotes values (secrets)."""
    path: KeyPath = tuple(err.absolute_path)
    validator = str(err.validator)
    expected: Any = err.validator_value
    schema: dict[str, Any] = err.schema if isinstance(err.schema, dict) else {}
    if validator == "additionalProperties":
        allowed = sorted((schema.get("properties") or {}).keys())
        instance: dict[str, Any] = err.instance if isinstance(err.instance, dict) else {}
        extra = [k for k in instance if k not in allowed and not k.startswith("x-")]
        return [
            (
                (*path, key),
                f"unknown key '{key}'{nearest(key, allowed)}; allowed here: {', '.join(allowed)}",
            )
            for key in extra
        ]
    if validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else "?"
        return [(path, f"missing required key '{missing}'")]
    if validator == "type":
        wanted = expected if isinstance(expected, list) else [expected]
        names = " or ".join(_TYPE_NAMES.get(str(w), str(w)) for w in wanted)
        return [(path, f"must be {names}")]
    if validator == "enum":
        options = ", ".join(json.dumps(o) for o in expected)
        given = err.instance if isinstance(err.instance, str) and len(err.instance) < 40 else None
        hint = nearest(given, [str(o) for o in expected]) if given else ""
        return [(path, f"must be one of {options}{hint}")]
    if validator in ("minimum", "maximum"):
        return [
            (
                path,
                f"must be {'at least' if validator == 'minimum' else 'at most'} {err.validator_value}",
            )
        ]
    if validator == "minItems":
        return [(path, f"needs at least {err.validator_value} item(s)")]
    if validator == "pattern":
        return [
            (
                path,
                "must start with '/'"
                if err.validator_value == "^/"
                else f"must match {err.validator_value}",
            )
        ]
    if validator in ("allOf", "if", "then"):
        return [d for sub in err.context or [] for d in describe(sub)]
    return [(path, err.message if len(err.message) < 120 else "is not valid here")]

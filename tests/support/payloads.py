"""Webhook bodies for tests: the shipped IDWise samples, with body fields overridden, and the
hostile-input corpus (tests/corpus). Pure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway import idwise

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
DROP: Any = object()  # as a field's value: remove the field from the sample


def payload(
    event_type: str = "Finished Journey",
    *,
    event_id: str | None = None,
    journey: str | None = None,
    **body: Any,
) -> bytes:
    """The sample of `event_type`: its exact shipped bytes when nothing is overridden, else
    re-encoded with `body` fields (and eventId / journeyId) replaced, or removed (`DROP`)."""
    if event_id is not None:
        body["eventId"] = event_id
    if journey is not None:
        body["journeyId"] = journey
    if not body:
        return idwise.sample_bytes(event_type)
    document = idwise.sample(event_type)
    for key, value in body.items():
        if value is DROP:
            document["body"].pop(key, None)
        else:
            document["body"][key] = value
    return json.dumps(document).encode()


def corpus_manifest() -> dict[str, dict[str, Any]]:
    manifest: dict[str, dict[str, Any]] = json.loads((CORPUS / "manifest.json").read_text())
    return manifest


def corpus_body(name: str) -> bytes:
    entry = corpus_manifest()[name]
    recipe = entry.get("generate")
    if recipe is None:
        return (CORPUS / name).read_bytes()
    prefix: bytes = recipe["prefix"].encode()
    suffix: bytes = recipe["suffix"].encode()
    fill: bytes = recipe["fill"].encode() * (recipe["size"] - len(prefix) - len(suffix))
    return prefix + fill + suffix

"""What IDWise sends: event types, the body fields each carries, and a sample of each.

Pure (the samples are package data read once). The facts come from IDWise's public docs
(see docs/idwise.md); enumerated values are treated as open, so nothing here is used to
reject a payload, only to warn about rules that can never see a field.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

COMMON_FIELDS = ("eventId", "journeyId", "referenceNo")

#: event type -> body fields it carries (beyond eventId/journeyId/referenceNo)
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "Finished Step": ("stepId", "stepType"),
    "Finished User Steps": ("systemDecision",),
    "Finished Journey": ("systemDecision", "manualDecision", "finalDecision"),
    "Updated Journey": ("systemDecision", "manualDecision", "finalDecision", "action"),
    "Manually Reviewed": ("systemDecision", "manualDecision", "finalDecision"),
    "Verification Update Required": (
        "systemDecision",
        "manualDecision",
        "finalDecision",
        "trigger",
        "requiredSteps",
    ),
    "KYC Renewal Deadline Exceeded": ("requiredSteps",),
    "AML Monitor Update": ("systemDecision", "previousSystemDecision", "updatedAMLVersionNumber"),
    "Finished Spot Check": ("systemDecision", "spotCheckJourneyId"),
    "Step Submitted": ("stepId", "stepType"),
    "Finished Ongoing Check": ("ongoingCheckId", "systemDecision"),
}

EVENT_TYPES: tuple[str, ...] = tuple(EVENT_FIELDS)

SAMPLE_FILES: dict[str, str] = {
    "Finished Step": "finished_step.json",
    "Finished User Steps": "finished_user_steps.json",
    "Finished Journey": "finished_journey.json",
    "Updated Journey": "updated_journey.json",
    "Manually Reviewed": "manually_reviewed.json",
    "Verification Update Required": "verification_update_required.json",
    "KYC Renewal Deadline Exceeded": "kyc_renewal_deadline_exceeded.json",
    "AML Monitor Update": "aml_monitor_update.json",
    "Finished Spot Check": "finished_spot_check.json",
    "Step Submitted": "legacy_step_submitted.json",
    "Finished Ongoing Check": "finished_ongoing_check.json",
}

DECISIONS = ("Complete", "Incomplete", "Refer")
MANUAL_DECISIONS = (None, "Approved", "Rejected")
UPDATED_JOURNEY_ACTIONS = ("Step Update", "AML Amend", "AML OGM Update", "Manual Review")


def fields_of(event_types: tuple[str, ...] | None) -> frozenset[str]:
    """Body fields any of `event_types` carries (all known types when None)."""
    types = event_types if event_types else EVENT_TYPES
    fields: set[str] = set(COMMON_FIELDS)
    for name in types:
        fields.update(EVENT_FIELDS.get(name, ()))
    return frozenset(fields)


@cache
def sample_bytes(event_type: str) -> bytes:
    """The sample payload of `event_type` exactly as IDWise would POST it."""
    name = SAMPLE_FILES[event_type]
    return resources.files("gateway").joinpath("samples", name).read_bytes()


def sample(event_type: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(sample_bytes(event_type))
    return document


def find_event_type(name: str) -> str | None:
    """Case- and separator-insensitive lookup so `finished_journey` finds `Finished Journey`."""
    wanted = name.replace("_", " ").replace("-", " ").strip().lower()
    for event_type in EVENT_TYPES:
        if event_type.lower() == wanted:
            return event_type
    return None

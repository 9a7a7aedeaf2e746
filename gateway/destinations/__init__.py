"""Destination types. The registry below is the complete, explicit list: a new type is a
module with `build(name, raw, ctx)` returning an object that satisfies `base.Destination`,
and `SECRETS`, the settings of that type that hold credentials."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.destinations import email, http, script, slack
from gateway.destinations.base import BuildContext, Destination, SecretKeys

Builder = Callable[[str, dict[str, Any], BuildContext], Destination]


@dataclass(frozen=True, slots=True)
class DestinationType:
    build: Builder
    secrets: SecretKeys


REGISTRY: dict[str, DestinationType] = {
    "slack": DestinationType(slack.build, slack.SECRETS),
    "http": DestinationType(http.build, http.SECRETS),
    "email": DestinationType(email.build, email.SECRETS),
    "script": DestinationType(script.build, script.SECRETS),
}

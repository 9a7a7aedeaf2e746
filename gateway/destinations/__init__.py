"""Destination types. The registry below is the complete, explicit list: a new type is a
module with `build(name, raw, ctx)` returning an object that satisfies `base.Destination`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.destinations import email, http, script, slack
from gateway.destinations.base import BuildContext, Destination

Builder = Callable[[str, dict[str, Any], BuildContext], Destination]

REGISTRY: dict[str, Builder] = {
    "slack": slack.build,
    "http": http.build,
    "email": email.build,
    "script": script.build,
}

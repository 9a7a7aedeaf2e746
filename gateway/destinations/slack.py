"""Slack incoming-webhook destination. I/O in `send`.

The webhook URL is the secret. Payload values are escaped for mrkdwn so a payload cannot
ping `<!channel>`; Slack's documented error strings decide retry versus give up.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.destinations.base import (
    BuildContext,
    DestinationProblem,
    SecretKeys,
    SendContext,
    Sent,
    bounded,
    classify_status,
    mask_url,
    parse_retry_after,
    status_reason,
)
from gateway.errors import PermanentDeliveryError, RetryableDeliveryError
from gateway.events import Event
from gateway.render import Template, one_line, render, render_text
from gateway.retry import DeliveryPolicy
from gateway.secret import Secret

#: the incoming-webhook URL is the credential; blocks are a template of any shape
SECRETS = SecretKeys(whole=frozenset({"url"}), free_form=frozenset({"blocks"}))

#: Slack's documented incoming-webhook errors that no retry can fix
PERMANENT_ERRORS = frozenset(
    {
        "invalid_payload",
        "no_text",
        "channel_not_found",
        "channel_is_archived",
        "action_prohibited",
        "no_service",
        "no_service_id",
        "no_team",
        "team_disabled",
        "invalid_token",
        "posting_to_general_channel_denied",
        "user_not_found",
        "too_many_attachments",
    }
)

_HEADERS = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "idwise-gateway"}

#: Slack allows about one message per second per incoming webhook
DEFAULT_RATE_LIMIT = "1/s"


def escape_mrkdwn(text: str) -> str:
    """A payload value made inert in a Slack message: mrkdwn's `&`, `<`, `>` escaped (no
    `<!channel>`, no links), and kept on its line (no forged lines)."""
    return one_line(text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


_MARKERS = {
    "Refer": ":warning:",
    "Rejected": ":no_entry:",
    "Incomplete": ":hourglass_flowing_sand:",
    "Complete": ":white_check_mark:",
    "Approved": ":white_check_mark:",
}


def default_text(event: Event) -> str:
    """A readable message for any IDWise event, every payload value escaped."""
    body = event.body

    def value(key: str) -> str:
        item = body.get(key)
        return escape_mrkdwn(item if isinstance(item, str) else json.dumps(item))

    decision_key = next(
        (k for k in ("finalDecision", "manualDecision", "systemDecision") if body.get(k)), None
    )
    headline = f"*{escape_mrkdwn(event.type)}*"
    if decision_key:
        decision = str(body[decision_key])
        marker = _MARKERS.get(decision, ":grey_question:")
        headline = f"{marker} {headline}: *{escape_mrkdwn(decision)}*"
        if decision in ("Refer", "Rejected"):
            headline += " (needs attention)"
    lines = [headline]
    for key, label in (
        ("previousSystemDecision", "previous decision"),
        ("updatedAMLVersionNumber", "AML version"),
        ("action", "action"),
        ("trigger", "trigger"),
        ("stepType", "step type"),
    ):
        if key in body and body[key] is not None:
            lines.append(f"{label}: {value(key)}")
    steps = body.get("requiredSteps")
    if isinstance(steps, list) and steps:
        shown = []
        for step in steps[:10]:
            if isinstance(step, dict):
                detail = step.get("reasonCode") or step.get("renewalDeadline") or ""
                shown.append(escape_mrkdwn(f"{step.get('stepId', '?')} {detail}".strip()))
        lines.append("required steps: " + ", ".join(shown))
    ids = [
        f"{label} `{value(key)}`"
        for key, label in (
            ("journeyId", "journey"),
            ("spotCheckJourneyId", "spot check"),
            ("referenceNo", "ref"),
        )
        if body.get(key)
    ]
    if ids:
        lines.append(" · ".join(ids))
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class SlackDestination:
    name: str
    policy: DeliveryPolicy
    url: Secret
    text: Template | None = None
    blocks: Template | None = None
    extra: tuple[tuple[str, str], ...] = ()  # username, icon_emoji
    type: str = "slack"

    def templates(self) -> dict[str, Template]:
        found = {}
        if self.text is not None:
            found["text"] = self.text
        if self.blocks is not None:
            found["blocks"] = self.blocks
        return found

    def message(self, event: Event) -> dict[str, Any]:
        text = (
            default_text(event)
            if self.text is None
            else render_text(self.text, event.document, escape_mrkdwn)
        )
        message: dict[str, Any] = {"text": "" if text is None else str(text)}
        if self.blocks is not None:
            message["blocks"] = render(self.blocks, event.document, escape_mrkdwn)
        message.update(self.extra)
        return message

    def preview(self, event: Event) -> dict[str, Any]:
        return {"url": mask_url(self.url.reveal()), "json": self.message(event)}

    async def send(self, event: Event, context: SendContext) -> Sent:
        payload = json.dumps(self.message(event), ensure_ascii=False).encode()
        status, headers, reply = await context.exchange(
            "POST", self.url.reveal(), _HEADERS, payload, self.policy.timeout
        )
        return classify_reply(status, headers, reply, context.clock())


def classify_reply(status: int, headers: Mapping[str, str], reply: bytes, now: float) -> Sent:
    text = bounded(reply.decode("utf-8", "replace").strip(), 300)
    if 200 <= status < 300:
        return Sent(f"HTTP {status} {text}", status=status, output=text)
    code = text.split()[0] if text else ""
    if code in PERMANENT_ERRORS:
        raise PermanentDeliveryError(f"slack_{code}", f"HTTP {status} {code}", status=status)
    if classify_status(status) is RetryableDeliveryError:  # 408, 425, 429, 5xx
        retry_after = parse_retry_after(headers.get("retry-after"), now)
        raise RetryableDeliveryError(
            status_reason(status),
            f"HTTP {status} {code}".strip(),
            status=status,
            retry_after=retry_after,
        )
    raise PermanentDeliveryError(
        status_reason(status), f"HTTP {status} {code}".strip(), status=status
    )


def build(name: str, raw: dict[str, Any], ctx: BuildContext) -> SlackDestination:
    url = str(raw["url"])
    if not url.startswith(("https://", "http://")):
        ctx.problems.append(
            DestinationProblem(
                "url", "must be the incoming-webhook URL (https://hooks.slack.com/...)"
            )
        )
    extra = tuple((k, str(raw[k])) for k in ("username", "icon_emoji") if k in raw)
    return SlackDestination(
        name=name,
        policy=ctx.policy(raw, {"rate_limit": DEFAULT_RATE_LIMIT}),
        url=Secret(url),
        text=ctx.template(raw, "text"),
        blocks=ctx.template(raw, "blocks"),
        extra=extra,
    )

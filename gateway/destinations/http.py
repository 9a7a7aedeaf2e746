"""HTTP destination: POST (or PUT/PATCH) the event to an internal service. I/O in `send`.

Default body: the original request bytes, unchanged. `Idempotency-Key` carries the dedupe
key; with `sign`, Standard Webhooks headers let the receiver verify origin and freshness.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gateway.destinations.base import (
    BuildContext,
    DestinationProblem,
    SecretKeys,
    SendContext,
    Sent,
    bounded,
    classify_status,
    parse_retry_after,
    status_reason,
)
from gateway.errors import RetryableDeliveryError
from gateway.events import Event
from gateway.render import Template, render, render_text
from gateway.retry import DeliveryPolicy
from gateway.secret import MASK, Redactor, Secret, Shown

#: a URL may carry a key in its query; headers like Authorization; the signing key
SECRETS = SecretKeys(
    whole=frozenset({"url", "sign.secret"}),
    named=frozenset({"headers"}),
    free_form=frozenset({"body"}),
)


@dataclass(frozen=True, slots=True)
class HttpDestination:
    name: str
    policy: DeliveryPolicy
    url: Secret
    method: str = "POST"
    headers: tuple[tuple[str, Template], ...] = ()
    body: Template | None = None  # None: forward the original bytes
    #: Standard Webhooks secrets; one `v1,` signature each (several while a receiver rotates)
    sign_keys: tuple[Secret, ...] = ()
    redactor: Redactor = field(default_factory=Redactor, compare=False, repr=False)
    type: str = "http"

    def templates(self) -> dict[str, Template]:
        found: dict[str, Template] = {f"headers.{k}": v for k, v in self.headers}
        if self.body is not None:
            found["body"] = self.body
        return found

    def request(self, event: Event, now: float) -> tuple[dict[str, str], bytes]:
        if self.body is None:
            payload = event.raw
        else:
            payload = json.dumps(render(self.body, event.document), ensure_ascii=False).encode()
        key = header_safe_key(event.dedupe_key)
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            "User-Agent": "idwise-gateway",
        }
        for name, template in self.headers:
            headers[name] = header_value(render_text(template, event.document))
        if self.sign_keys:
            headers.update(sign(self.sign_keys, key, int(now), payload))
        return headers, payload

    def preview(self, event: Event) -> dict[str, Any]:
        import time

        headers, payload = self.request(event, time.time())
        secret_headers = {key for key, _ in self.headers if key.lower() == "authorization"}
        shown = {
            k: (
                "****"
                if k in secret_headers or k == "webhook-signature"
                else self.redactor.redact(v)
            )
            for k, v in headers.items()
        }
        try:
            body: Any = json.loads(payload)
        except ValueError:
            body = payload.decode("utf-8", "replace")
        return {
            "method": self.method,
            "url": shown_url(self.url.reveal(), self.redactor),
            "headers": shown,
            "body": body,
        }

    async def send(self, event: Event, context: SendContext) -> Sent:
        headers, payload = self.request(event, context.clock())
        status, reply_headers, reply = await context.exchange(
            self.method, self.url.reveal(), headers, payload, self.policy.timeout
        )
        error = classify_status(status)
        text = bounded(reply.decode("utf-8", "replace"), 500)
        if error is None:
            return Sent(f"HTTP {status}", status=status, output=text)
        retry_after = None
        if error is RetryableDeliveryError and status in (429, 503):
            retry_after = parse_retry_after(reply_headers.get("retry-after"), context.clock())
        raise error(
            status_reason(status),
            f"HTTP {status}",
            status=status,
            retry_after=retry_after,
            output=text,
        )


def shown_url(url: str, redactor: Redactor) -> Shown:
    """The URL as `route` shows it: scheme, host, port and path kept (so a wrong host or path
    can be seen), userinfo and every query value masked, and any configured secret masked
    wherever it appears (a token in the path)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return Shown(MASK)
    # each part on its own: the whole URL is registered as a secret too, and must not mask
    # everything again; a secret inside a part (a token as a path segment) still is
    host = redactor.redact(parts.hostname or "")
    if ":" in host:
        host = f"[{host}]"
    netloc = (f"{MASK}@" if "@" in parts.netloc else "") + host + (f":{port}" if port else "")
    query = "&".join(
        f"{redactor.redact(key)}={MASK}" if sep else redactor.redact(key)
        for key, sep, _ in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return Shown(urlunsplit((parts.scheme, netloc, redactor.redact(parts.path), query, "")))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_HEADER_VALUE = 4096


def header_value(text: str) -> str:
    """Payload text made safe for a header: no control characters (no CR/LF injection, no
    NUL that the client library refuses), bounded length."""
    return _CONTROL.sub(" ", text)[:MAX_HEADER_VALUE]


def header_safe_key(dedupe_key: str) -> str:
    """The dedupe key as a header; a key no receiver would take (control characters, absurd
    length) is replaced by its SHA-256, still stable across retries."""
    if len(dedupe_key) <= MAX_HEADER_VALUE and not _CONTROL.search(dedupe_key):
        return dedupe_key
    return "sha256:" + hashlib.sha256(dedupe_key.encode("utf-8", "surrogatepass")).hexdigest()


def sign(
    secrets: tuple[Secret, ...], message_id: str, timestamp: int, payload: bytes
) -> dict[str, str]:
    """Standard Webhooks (standardwebhooks.com) signature headers: one `v1,<base64>` per
    secret, space-separated, so a receiver holding any one of them verifies (rotation)."""
    signed = f"{message_id}.{timestamp}.".encode() + payload
    signatures = []
    for secret in secrets:
        key = decode_signing_secret(secret.reveal())
        digest = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        signatures.append(f"v1,{digest}")
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
    }


def decode_signing_secret(secret: str) -> bytes:
    raw = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("sign.secret must be 'whsec_' followed by base64") from None
    if len(key) < 16:
        raise ValueError(
            "sign.secret is too short; use at least 16 random bytes (24+ base64 chars)"
        )
    return key


def signing_keys(raw: Any, ctx: BuildContext) -> tuple[Secret, ...]:
    """`sign.secret`: one secret or a list (the new one first while a receiver rotates);
    empty entries, like an unset "${SIGNING_SECRET_NEXT:-}", are skipped."""
    if not raw:
        return ()
    values = raw["secret"] if isinstance(raw["secret"], list) else [raw["secret"]]
    keys: list[Secret] = []
    invalid = False
    for i, value in enumerate(values):
        if not value:
            continue
        where = f"sign.secret[{i}]" if isinstance(raw["secret"], list) else "sign.secret"
        try:
            decode_signing_secret(str(value))
        except ValueError as exc:
            ctx.problems.append(DestinationProblem(where, str(exc)))
            invalid = True
            continue
        keys.append(Secret(str(value)))
    if not keys and not invalid:
        ctx.problems.append(DestinationProblem("sign.secret", "no signing secret is set"))
    return tuple(keys)


def build(name: str, raw: dict[str, Any], ctx: BuildContext) -> HttpDestination:
    url = str(raw["url"])
    if not url.startswith(("http://", "https://")):
        ctx.problems.append(DestinationProblem("url", "must start with http:// or https://"))
    headers: list[tuple[str, Template]] = []
    for key, value in (raw.get("headers") or {}).items():
        headers.append((key, ctx.compile(f"headers.{key}", value, "")))
    sign_keys = signing_keys(raw.get("sign"), ctx)
    return HttpDestination(
        name=name,
        policy=ctx.policy(raw),
        url=Secret(url),
        method=str(raw.get("method", "POST")).upper(),
        headers=tuple(headers),
        body=ctx.template(raw, "body"),
        sign_keys=sign_keys,
        redactor=ctx.redactor,
    )

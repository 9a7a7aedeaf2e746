"""The Destination protocol, shared classification of HTTP answers, and build helpers.

Pure except `SendContext`, which carries the destination's HTTP client into `send`
(destinations/client.py makes it and holds the exchange every HTTP destination uses).
Every destination type is a module in this package that exposes `build(name, raw, ctx)`;
`destinations/__init__.py` holds the explicit registry.
"""

from __future__ import annotations

import email.utils
import errno
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gateway.destinations.http1 import (
    BadResponse,
    ConnectFailed,
    ConnectionDropped,
    InvalidHeader,
    InvalidTarget,
    Reply,
)
from gateway.errors import (
    DeliveryError,
    LocalResourceError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from gateway.events import Event
from gateway.render import Template, TemplateError, compile_template
from gateway.retry import DeliveryPolicy
from gateway.secret import MASK, Redactor, Secret

if TYPE_CHECKING:
    from gateway.destinations.client import HttpClient


@dataclass(slots=True)
class SendContext:
    client: HttpClient
    delivery_id: int = 0
    attempt: int = 1
    clock: Callable[[], float] = time.time

    async def exchange(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        timeout: float,  # noqa: ASYNC109 - the exchange's own deadline, connect included
    ) -> Reply:
        """The client's exchange, its failures as delivery errors (`transport_error`): the
        one way an HTTP-based destination sends."""
        try:
            return await self.client.exchange(method, url, headers, body, timeout)
        except Exception as exc:
            raise transport_error(exc) from None


@dataclass(frozen=True, slots=True)
class Sent:
    """A successful attempt: a short detail for the attempt record (status, reply)."""

    detail: str = ""
    status: int | None = None
    output: str | None = None


class Destination(Protocol):
    # read-only members, so frozen dataclasses satisfy the protocol
    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def policy(self) -> DeliveryPolicy: ...

    def preview(self, event: Event) -> dict[str, Any]:
        """What `send` would transmit, secrets masked (for `route`)."""
        ...

    def templates(self) -> dict[str, Template]:
        """Compiled templates by key (for `check`: field warnings and sample rendering)."""
        ...

    async def send(self, event: Event, context: SendContext) -> Sent:
        """One attempt. Raises RetryableDeliveryError or PermanentDeliveryError."""
        ...


@dataclass(frozen=True, slots=True)
class SecretKeys:
    """Which settings of a destination type hold credentials. Each type module declares
    its own as `SECRETS`; `config.secrets` registers their values with the redaction point
    while the file is read (keys are relative to the destination, dotted when nested).

    whole: settings whose whole value is a credential ("url", "sign.secret")
    named: mappings whose entries are credentials when the entry's name says so
        (Authorization, X-Api-Key, SIGNING_SECRET; not Content-Type or LEVEL)
    long: mappings whose literal values of 12 or more characters are credentials whatever
        their name (a script's env)
    free_form: templates of any shape (Slack blocks, an HTTP body): inside them a key named
        like a credential (url, token, secret, password, value) is taken to hold one
    """

    whole: frozenset[str] = frozenset()
    named: frozenset[str] = frozenset()
    long: frozenset[str] = frozenset()
    free_form: frozenset[str] = frozenset()


class DestinationProblem(ValueError):
    def __init__(self, key: str, message: str) -> None:
        self.key = key  # relative to the destination, e.g. "headers.X-Token" or "text"
        super().__init__(message)


@dataclass(slots=True)
class BuildContext:
    """What a destination builder gets besides its raw settings."""

    base_dir: Path
    default_policy: DeliveryPolicy
    make_policy: Callable[[dict[str, Any], dict[str, Any]], DeliveryPolicy]
    redactor: Redactor
    problems: list[DestinationProblem] = field(default_factory=list)
    warnings: list[DestinationProblem] = field(default_factory=list)  # `check` warnings

    def policy(
        self, raw: dict[str, Any], type_defaults: dict[str, Any] | None = None
    ) -> DeliveryPolicy:
        return self.make_policy(raw.get("delivery") or {}, type_defaults or {})

    def template(self, raw: dict[str, Any], key: str, default: Any = None) -> Template:
        if key not in raw:
            return default
        return self.compile(key, raw[key], default)

    def compile(self, key: str, value: Any, default: Any = None) -> Template:
        """Compile a template, recording a problem at `key` instead of raising."""
        try:
            return compile_template(value)
        except TemplateError as exc:
            self.problems.append(DestinationProblem(key, f"invalid template: {exc}"))
            return default

    def secret(self, raw: dict[str, Any], key: str) -> Secret | None:
        value = raw.get(key)
        return Secret(value) if isinstance(value, str) and value else None

    def path(self, value: str) -> Path:
        candidate = Path(value)
        return candidate if candidate.is_absolute() else self.base_dir / candidate


RETRYABLE_STATUSES = frozenset({408, 425, 429})


def classify_status(status: int) -> type[DeliveryError] | None:
    """None on 2xx; the error class for anything else (one decision for all HTTP peers)."""
    if 200 <= status < 300:
        return None
    if status in RETRYABLE_STATUSES or status >= 500:
        return RetryableDeliveryError
    return PermanentDeliveryError


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait, from delta-seconds or an HTTP date; None if absent or garbled."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²".isdigit() is true too
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - now)


def status_reason(status: int) -> str:
    return f"http_{status // 100}xx" if status >= 500 else f"http_{status}"


def mask_url(url: str) -> str:
    """Keep scheme and host of a URL, hide the path (Slack URLs are the secret)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return MASK
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}/{MASK}"


def bounded(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more)"


#: errno values that mean *we* ran out (descriptors, memory, processes, buffers), not that
#: the destination failed
SHORTAGE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS, errno.EAGAIN})


def local_shortage(exc: BaseException | None) -> bool:
    """Whether `exc` (or what it wraps: ConnectFailed's os_error, a cause or context) is a
    shortage of our own resources."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in SHORTAGE_ERRNOS:
            return True
        wrapped = getattr(exc, "os_error", None)
        if isinstance(wrapped, OSError) and wrapped.errno in SHORTAGE_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def transport_error(exc: BaseException) -> RetryableDeliveryError | PermanentDeliveryError:
    """Map a client-side failure to a typed delivery error."""
    import asyncio

    if local_shortage(exc):
        return LocalResourceError("local_resources", f"{type(exc).__name__}: {exc}"[:200])

    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return RetryableDeliveryError("timeout", "no answer within the timeout")
    if isinstance(exc, InvalidTarget):
        return PermanentDeliveryError("invalid_url", f"the configured URL is not valid: {exc}")
    if isinstance(exc, InvalidHeader):
        return PermanentDeliveryError("invalid_header", str(exc))
    if isinstance(exc, ConnectFailed):
        return RetryableDeliveryError("connection", f"cannot connect: {exc}")
    if isinstance(exc, BadResponse):
        return RetryableDeliveryError("connection", f"unreadable answer: {exc}")
    if isinstance(exc, ConnectionDropped | OSError):
        return RetryableDeliveryError("connection", type(exc).__name__)
    return RetryableDeliveryError("error", type(exc).__name__)

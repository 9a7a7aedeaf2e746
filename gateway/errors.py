"""The gateway's exception tree. Pure; no I/O.

    GatewayError
    ├── ConfigError              config or rules invalid (carries every Problem found)
    ├── AuthError                request refused: reason is `ip_denied` or `unauthorized`
    ├── PayloadError             request body unusable (400/413); reason names the problem
    ├── StoreError               the store could not commit or read; callers answer 503
    └── DeliveryError            one delivery attempt failed
        ├── RetryableDeliveryError   a later attempt may succeed (5xx, timeout, 429, exit 75)
        │   └── LocalResourceError   our own file descriptors, memory or processes ran out:
        │                            retried without counting against max_attempts
        └── PermanentDeliveryError   retrying cannot help (4xx, invalid payload, exit 1)

Every error carries a short `reason` that is safe as a log field and a metric label.
"""

from __future__ import annotations

from dataclasses import dataclass


class GatewayError(Exception):
    reason = "error"


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about a config: where it is and what to do about it."""

    file: str
    line: int
    path: str
    message: str
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        tag = "" if self.severity == "error" else "warning: "
        return f"{self.file}:{self.line}: {self.path or '<root>'}: {tag}{self.message}"


class ConfigError(GatewayError):
    reason = "config"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class AuthError(GatewayError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class PayloadError(GatewayError):
    def __init__(self, reason: str, message: str, status: int = 400) -> None:
        self.reason = reason
        self.status = status
        super().__init__(message)


class StoreError(GatewayError):
    def __init__(self, reason: str, message: str = "") -> None:
        self.reason = reason
        super().__init__(message or reason)


class DeliveryError(GatewayError):
    def __init__(
        self,
        reason: str,
        detail: str = "",
        *,
        status: int | None = None,
        retry_after: float | None = None,
        output: str | None = None,
    ) -> None:
        self.reason = reason
        self.detail = detail
        self.status = status
        self.retry_after = retry_after
        self.output = output
        super().__init__(f"{reason}: {detail}" if detail else reason)


class RetryableDeliveryError(DeliveryError):
    pass


class PermanentDeliveryError(DeliveryError):
    pass


class LocalResourceError(RetryableDeliveryError):
    """The attempt could not even start for a shortage of our own (EMFILE, ENFILE, ENOMEM,
    EAGAIN on spawn or connect): not the destination's fault, so it costs no attempt of the
    `max_attempts` budget (`max_age` still applies)."""

"""Who may use the admin listener (the console, metrics, reload): the configured tokens and their roles.
Pure (constant-time comparisons; nothing stored).

`admin.token` is an operator token (it always could reload); `admin.tokens` adds tokens with
a role each. A viewer reads everything; only an operator replays, re-routes, sends test
events or reloads.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from gateway.config.model import AdminConfig

VIEWER = "viewer"
OPERATOR = "operator"
ROLES = (VIEWER, OPERATOR)


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in token, as the audit log names it: never the token itself."""

    role: str
    fingerprint: str

    @property
    def who(self) -> str:
        return f"{self.role}:{self.fingerprint}"

    @property
    def may_act(self) -> bool:
        return self.role == OPERATOR


def fingerprint(token: str) -> str:
    """8 hex digits of a hash: tells tokens apart in logs, useless for guessing one."""
    return hashlib.sha256(b"idwise-gateway admin token\0" + token.encode()).hexdigest()[:8]


def credentials(admin: AdminConfig) -> list[tuple[str, str]]:
    """(token, role) pairs in force."""
    pairs = [(token.reveal(), role) for token, role in admin.tokens]
    if admin.token:
        pairs.append((admin.token.reveal(), OPERATOR))
    return [(token, role) for token, role in pairs if token]


def console_enabled(admin: AdminConfig) -> bool:
    return bool(credentials(admin))


def identify(admin: AdminConfig, given: str) -> Principal | None:
    """The principal of `given`, or None. Every configured token is compared (constant
    time each), so the answer's timing does not tell which one was close."""
    found: Principal | None = None
    encoded = given.encode("utf-8", "surrogateescape")
    for token, role in credentials(admin):
        if hmac.compare_digest(encoded, token.encode()) and found is None:
            found = Principal(role, fingerprint(token))
    return found


def still_valid(admin: AdminConfig, principal: Principal) -> bool:
    """A session lives only while its token is configured with that role: removing or
    demoting a token in a reload ends its sessions."""
    return any(
        role == principal.role and fingerprint(token) == principal.fingerprint
        for token, role in credentials(admin)
    )

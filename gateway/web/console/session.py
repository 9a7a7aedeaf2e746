"""Console sessions: a signed cookie, and the CSRF token that goes with each session. Pure
(HMAC over the cookie's fields).

The signing key is either random, made at start and kept only in this process's memory (a
restart signs everyone out, nothing on disk can forge a session, each replica signs its
own), or derived from `admin.session_key`, a secret every replica is given: then a session
issued by one replica is good on all of them, and survives restarts. The key is looked up
at each use, so a reload that changes `admin.session_key` ends every session at once.

The cookie holds role, token fingerprint, expiry and a random nonce; the CSRF token is
derived from the nonce, so it is bound to one session and never stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.web.access import ROLES, Principal

COOKIE = "idwise_console"
LIFETIME = 8 * 3600.0  # a working day; then sign in again


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    expires: float
    nonce: str


#: the purpose a shared session key is bound to: the same secret used elsewhere (it should
#: not be) still yields a key of its own here
KEY_CONTEXT = b"idwise-gateway console session v1"


def derived_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), KEY_CONTEXT, hashlib.sha256).digest()


class SessionSigner:
    def __init__(
        self,
        key: bytes | None = None,
        clock: Callable[[], float] = time.time,
        shared: Callable[[], str | None] = lambda: None,
    ) -> None:
        """`key` (tests) or a random one; `shared()` returns `admin.session_key` when one
        is configured, which then wins."""
        self._own = key or secrets.token_bytes(32)
        self._shared = shared
        self._derived: tuple[str, bytes] | None = None
        self._clock = clock

    @property
    def _key(self) -> bytes:
        secret = self._shared()
        if secret is None:
            return self._own
        if self._derived is None or self._derived[0] != secret:
            self._derived = (secret, derived_key(secret))
        return self._derived[1]

    def issue(self, principal: Principal, lifetime: float = LIFETIME) -> tuple[str, Session]:
        session = Session(principal, self._clock() + lifetime, secrets.token_urlsafe(16))
        fields = f"{principal.role}|{principal.fingerprint}|{session.expires:.0f}|{session.nonce}"
        return f"{_b64(fields.encode())}.{self._mac(fields)}", session

    def verify(self, cookie: str | None) -> Session | None:
        if not cookie or "." not in cookie:
            return None
        encoded, mac = cookie.rsplit(".", 1)
        try:
            fields = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(mac, self._mac(fields)):
            return None
        parts = fields.split("|")
        if len(parts) != 4 or parts[0] not in ROLES:
            return None
        role, print_, expires, nonce = parts
        if float(expires) < self._clock():
            return None
        return Session(Principal(role, print_), float(expires), nonce)

    def csrf_token(self, session: Session) -> str:
        return self._mac("csrf|" + session.nonce)

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given), self.csrf_token(session))

    def _mac(self, text: str) -> str:
        return _b64(hmac.new(self._key, text.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")

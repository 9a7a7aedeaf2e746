"""Who may post webhooks: credentials and source-IP checks. Pure; no I/O.

Comparison is constant-time on bytes. The caller learns only *that* a request failed
(`ip_denied` -> 403, `unauthorized` -> 401), never which credential was close.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.errors import AuthError
from gateway.secret import Secret

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class BasicCredential:
    username: Secret
    password: Secret


@dataclass(frozen=True, slots=True)
class HeaderCredential:
    name: str
    value: Secret


@dataclass(frozen=True, slots=True)
class AuthConfig:
    basic: tuple[BasicCredential, ...] = ()
    bearer: tuple[Secret, ...] = ()
    headers: tuple[HeaderCredential, ...] = ()
    allow_ips: tuple[IPNetwork, ...] = ()
    trusted_proxies: tuple[IPNetwork, ...] = ()
    allow_unauthenticated: bool = False

    @property
    def has_credentials(self) -> bool:
        return bool(self.basic or self.bearer or self.headers)


def parse_ip(text: str) -> IPAddress | None:
    """An address with IPv4-mapped IPv6 (::ffff:1.2.3.4) folded to IPv4; None if unparsable."""
    try:
        address = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _in_any(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted_proxies: tuple[IPNetwork, ...]
) -> IPAddress | None:
    """The real client: the peer, unless the peer is a trusted proxy, in which case the
    rightmost X-Forwarded-For address that is not itself a trusted proxy."""
    address = parse_ip(peer) if peer else None
    if address is None or not forwarded_for or not _in_any(address, trusted_proxies):
        return address
    for hop in reversed(forwarded_for.split(",")):
        hop_address = parse_ip(hop)
        if hop_address is None:
            return None  # a garbled chain cannot be trusted to name anyone
        if not _in_any(hop_address, trusted_proxies):
            return hop_address
    return address


def _header_bytes(value: str) -> bytes | None:
    """The header's bytes as they came: aiohttp decodes header values as UTF-8 with
    surrogateescape, so this is exact for any input. (Encoding as latin-1 first made a
    UTF-8 credential like 'pässword' arrive as b'p\\xe4ssword' and never match.)"""
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate no decoder produced: not from the wire
        return None


def header_lines(headers: Mapping[str, str], name: str) -> str | None:
    """Every line of a header that may be sent several times, joined with commas in order
    (RFC 9110 5.3): proxies such as HAProxy append their own X-Forwarded-For line instead of
    extending the first, so reading only the first line would trust what the client wrote."""
    getall: Callable[[str, list[str]], list[str]] | None = getattr(headers, "getall", None)
    if getall is None:
        return headers.get(name)
    lines = getall(name, [])
    return ",".join(lines) if lines else None


def _equal(given: bytes, expected: Secret) -> bool:
    return hmac.compare_digest(given, expected.reveal().encode("utf-8"))


def _check_basic(value: str, credentials: tuple[BasicCredential, ...]) -> bool:
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    username, sep, password = decoded.partition(b":")
    if not sep:
        return False
    ok = False
    for credential in credentials:
        # no early exit: every configured pair is compared, whatever matched
        ok |= _equal(username, credential.username) & _equal(password, credential.password)
    return ok


def _check_bearer(value: str, tokens: tuple[Secret, ...]) -> bool:
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    given = _header_bytes(token.strip())
    if given is None:
        return False
    ok = False
    for expected in tokens:
        ok |= _equal(given, expected)
    return ok


def _check_headers(headers: Mapping[str, str], expected: tuple[HeaderCredential, ...]) -> bool:
    ok = False
    for credential in expected:
        value = headers.get(credential.name)
        given = _header_bytes(value) if value is not None else None
        if given is not None:
            ok |= _equal(given, credential.value)
    return ok


def authenticate(
    config: AuthConfig, headers: Mapping[str, str], peer: str | None
) -> IPAddress | None:
    """Admit or refuse one request; returns the client address when an allowlist or trusted
    proxies make it matter (else None: the peer is the client). Raises AuthError.

    The IP allowlist is checked first (403 wins over 401), then any configured credential
    passes.
    """
    client = None
    if config.allow_ips or config.trusted_proxies:  # parsing addresses costs; skip if unused
        client = client_address(
            peer, header_lines(headers, "X-Forwarded-For"), config.trusted_proxies
        )
    if config.allow_ips and (client is None or not _in_any(client, config.allow_ips)):
        raise AuthError("ip_denied")
    if not config.has_credentials:
        return client
    authorization = headers.get("Authorization", "")
    if config.basic and _check_basic(authorization, config.basic):
        return client
    if config.bearer and _check_bearer(authorization, config.bearer):
        return client
    if config.headers and _check_headers(headers, config.headers):
        return client
    raise AuthError("unauthorized")

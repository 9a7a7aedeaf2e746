import base64
import ipaddress

import pytest

from gateway.auth import AuthConfig, BasicCredential, HeaderCredential, authenticate, client_address
from gateway.errors import AuthError
from gateway.secret import Secret


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


CONFIG = AuthConfig(
    basic=(BasicCredential(Secret("idwise"), Secret("pa:ss")),),
    bearer=(Secret("token-old"), Secret("token-new")),
    headers=(HeaderCredential("X-IDWise-Key", Secret("k3y")),),
)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": basic("idwise", "pa:ss")},
        {"Authorization": "Bearer token-old"},
        {"Authorization": "Bearer token-new"},
        {"Authorization": "bearer token-new"},
        {"X-IDWise-Key": "k3y"},
    ],
)
def test_any_configured_credential_passes(headers: dict[str, str]) -> None:
    authenticate(CONFIG, headers, "203.0.113.9")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": basic("idwise", "wrong")},
        {"Authorization": basic("other", "pa:ss")},
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer token-older"},
        {"Authorization": "Bearer tökén"},
        {"Authorization": "Token token-new"},
        {"X-IDWise-Key": "k3y "},
        {"X-IDWise-Key": "ключ"},
        {"X-Other": "k3y"},
    ],
)
def test_wrong_or_malformed_credentials_are_unauthorized(headers: dict[str, str]) -> None:
    with pytest.raises(AuthError) as caught:
        authenticate(CONFIG, headers, "203.0.113.9")
    assert caught.value.reason == "unauthorized"


def nets(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


ALLOW = AuthConfig(
    bearer=(Secret("t0ken"),),
    allow_ips=nets("203.0.113.0/24", "2001:db8::/32"),
    trusted_proxies=nets("10.0.0.0/8"),
)
GOOD = {"Authorization": "Bearer t0ken"}


@pytest.mark.parametrize("peer", ["203.0.113.7", "::ffff:203.0.113.7", "2001:db8::1"])
def test_allowlisted_sources_pass(peer: str) -> None:
    authenticate(ALLOW, GOOD, peer)


def test_ip_check_comes_before_credentials() -> None:
    with pytest.raises(AuthError) as caught:
        authenticate(ALLOW, {}, "198.51.100.1")
    assert caught.value.reason == "ip_denied"


def test_spoofed_forwarded_for_from_untrusted_peer_is_ignored() -> None:
    with pytest.raises(AuthError) as caught:
        authenticate(ALLOW, {**GOOD, "X-Forwarded-For": "203.0.113.7"}, "198.51.100.1")
    assert caught.value.reason == "ip_denied"


def test_forwarded_for_from_trusted_proxy_names_the_client() -> None:
    authenticate(ALLOW, {**GOOD, "X-Forwarded-For": "203.0.113.7"}, "10.1.2.3")
    # the rightmost untrusted hop is the client; a spoofed leftmost entry does not help
    with pytest.raises(AuthError):
        authenticate(ALLOW, {**GOOD, "X-Forwarded-For": "203.0.113.7, 198.51.100.1"}, "10.1.2.3")
    authenticate(
        ALLOW, {**GOOD, "X-Forwarded-For": "198.51.100.1, 203.0.113.7, 10.0.0.5"}, "10.1.2.3"
    )


def test_garbled_forwarded_for_is_refused() -> None:
    with pytest.raises(AuthError):
        authenticate(ALLOW, {**GOOD, "X-Forwarded-For": "203.0.113.7, bogus"}, "10.1.2.3")


def test_client_address_folds_ipv4_mapped() -> None:
    assert str(client_address("::ffff:10.0.0.1", None, ())) == "10.0.0.1"


def test_no_credentials_and_unauthenticated_allowed() -> None:
    authenticate(AuthConfig(allow_unauthenticated=True), {}, "1.2.3.4")


# ---- hardening (issue 13) ----------------------------------------------------------------
def test_every_forwarded_for_line_counts_as_one_list() -> None:
    """A forged first line plus the proxy's own appended line: the proxy's line is the
    rightmost, so it names the client (reading the first line alone trusted the forgery)."""
    from multidict import CIMultiDict, CIMultiDictProxy

    config = AuthConfig(
        allow_unauthenticated=True,
        allow_ips=nets("203.0.113.0/24"),
        trusted_proxies=nets("10.0.0.0/8"),
    )
    forged = CIMultiDict([("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "198.51.100.9")])
    with pytest.raises(AuthError):
        authenticate(config, CIMultiDictProxy(forged), "10.0.0.2")
    honest = CIMultiDict([("X-Forwarded-For", "198.51.100.9"), ("X-Forwarded-For", "203.0.113.7")])
    assert str(authenticate(config, CIMultiDictProxy(honest), "10.0.0.2")) == "203.0.113.7"


@pytest.mark.parametrize("secret", ["pässwört-ünïcode", "токен-доступа", "トークン123"])
def test_non_ascii_credentials_match_their_utf8_bytes(secret: str) -> None:
    """aiohttp decodes header bytes as UTF-8 (surrogateescape); comparing on latin-1 first
    made every credential with a character below U+0100 unmatchable."""
    config = AuthConfig(
        bearer=(Secret(secret),), headers=(HeaderCredential("X-Key", Secret(secret)),)
    )
    wire = secret.encode("utf-8").decode("utf-8", "surrogateescape")
    authenticate(config, {"Authorization": f"Bearer {wire}"}, None)
    authenticate(config, {"X-Key": wire}, None)
    latin1 = secret.encode("latin-1", "replace").decode("utf-8", "surrogateescape")
    with pytest.raises(AuthError):  # the same text sent as latin-1 bytes is another credential
        authenticate(config, {"X-Key": latin1}, None)

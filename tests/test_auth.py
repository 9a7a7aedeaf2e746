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

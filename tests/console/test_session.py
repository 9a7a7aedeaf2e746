"""Session cookies and CSRF tokens (pure): signed, expiring, bound to one session, and
useless to another process."""

from __future__ import annotations

from gateway.web.access import OPERATOR, VIEWER, Principal, fingerprint
from gateway.web.console.session import SessionSigner


def test_a_cookie_verifies_until_it_expires() -> None:
    now = [1000.0]
    signer = SessionSigner(clock=lambda: now[0])
    cookie, session = signer.issue(Principal(VIEWER, "abcd1234"), lifetime=60)
    assert signer.verify(cookie) == session
    now[0] += 61
    assert signer.verify(cookie) is None


def test_a_tampered_or_foreign_cookie_is_refused() -> None:
    signer = SessionSigner()
    cookie, _ = signer.issue(Principal(VIEWER, "abcd1234"))
    encoded, mac = cookie.rsplit(".", 1)
    forged = SessionSigner(b"another process's key").issue(Principal(OPERATOR, "abcd1234"))[0]
    flipped = mac[:-1] + ("B" if mac.endswith("A") else "A")  # one character changed
    for bad in (None, "", "garbage", forged, f"{encoded}.{flipped}", "x." + mac):
        assert signer.verify(bad) is None, bad


def test_csrf_tokens_belong_to_one_session() -> None:
    signer = SessionSigner()
    _, first = signer.issue(Principal(OPERATOR, "abcd1234"))
    _, second = signer.issue(Principal(OPERATOR, "abcd1234"))
    token = signer.csrf_token(first)
    assert signer.csrf_ok(first, token)
    assert not signer.csrf_ok(second, token)
    assert not signer.csrf_ok(first, "") and not signer.csrf_ok(first, None)


def test_fingerprints_tell_tokens_apart_without_showing_them() -> None:
    assert fingerprint("token-a") != fingerprint("token-b")
    assert len(fingerprint("token-a")) == 8 and "token" not in fingerprint("token-a")


def test_signers_given_one_session_key_accept_each_others_cookies() -> None:
    key = ["shared-key-" + "a" * 32]
    first, second = SessionSigner(shared=lambda: key[0]), SessionSigner(shared=lambda: key[0])
    cookie, session = first.issue(Principal(OPERATOR, "abcd1234"))
    verified = second.verify(cookie)
    assert verified is not None and verified.nonce == session.nonce
    assert verified.principal == session.principal
    assert second.csrf_ok(session, first.csrf_token(session))
    assert SessionSigner().verify(cookie) is None  # no shared key: a key of its own
    key[0] = "another-key-" + "b" * 32  # a reload with a new key
    assert first.verify(cookie) is None and second.verify(cookie) is None

"""What an upstream endpoint learns of the caller (CONTRACT §13): the application, the
client's address, an external IdP's subject, and never the token."""

from __future__ import annotations

from bridge.policy import Grant
from gateway.proxy import identity_headers, passes_through


def grant(issuer: str, subject: str | None = "user-42") -> Grant:
    return Grant("dashboard", frozenset({"echo:rw"}), 2e9, issuer, "jti", 1, None, subject)


def test_our_tokens_give_the_application_and_the_address() -> None:
    headers = identity_headers(grant("streambridge"), "streambridge", "10.0.0.7", None)
    assert headers == {"X-Streambridge-Application": "dashboard", "X-Forwarded-For": "10.0.0.7"}


def test_an_external_idp_token_gives_its_subject_and_the_chain_is_kept() -> None:
    headers = identity_headers(
        grant("https://idp.example.com/"), "streambridge", "10.0.0.7", "203.0.113.9"
    )
    assert headers["X-Streambridge-Subject"] == "user-42"
    assert headers["X-Forwarded-For"] == "203.0.113.9, 10.0.0.7"
    assert not any("authorization" in name.lower() for name in headers)


def test_which_upstream_close_codes_pass_through() -> None:
    codes = (1000, 1001, 1006, 1011, 1014, 3000, 4000, 4999, 5000)
    assert [c for c in codes if passes_through(c)] == [1000, 1001, 4000, 4999]

"""Access tokens (CONTRACT §4; RFC 7519, RFC 8725): issue, verify, and every refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bridge.errors import Unauthenticated
from bridge.tokens import (
    LEEWAY_SECONDS,
    SigningKey,
    TokenIssuer,
    TrustedKeys,
    VerifiedTokens,
    new_signing_key,
    signing_key_from_pem,
    verify_token,
)

ISSUER = "streambridge"
AUDIENCE = "streambridge"
TTL = 3600


@pytest.fixture(scope="module", params=["ES256", "RS256"])
def key(request: pytest.FixtureRequest) -> SigningKey:
    return new_signing_key(request.param)[0]


@pytest.fixture(scope="module")
def es_key() -> SigningKey:
    return new_signing_key("ES256")[0]


def issuer_for(key: SigningKey, *, issuer: str = ISSUER, audience: str = AUDIENCE) -> TokenIssuer:
    return TokenIssuer(key, issuer=issuer, audience=audience, ttl=TTL)


def trust(*keys: SigningKey, issuer: str = ISSUER, audience: str = AUDIENCE) -> TrustedKeys:
    return TrustedKeys(issuer, audience, {k.kid: k.public_jwk() for k in keys})


def trusted(key: SigningKey) -> dict[str, TrustedKeys]:
    return {ISSUER: trust(key)}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"


def valid_claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "dashboard",
        "client_id": "dashboard",
        "iat": now,
        "exp": now + 300,
        "scope": "orders:read",
    }
    return {**claims, **changes}


def sign(key: SigningKey, claims: dict[str, Any], **header: Any) -> str:
    return jwt.encode(
        claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid, **header}
    )


def refused(token: str, trusted_keys: dict[str, TrustedKeys], match: str | None = None) -> None:
    with pytest.raises(Unauthenticated, match=match):
        verify_token(token, trusted_keys)


# --- issue and verify --------------------------------------------------------------------------


def test_issue_then_verify_roundtrip(key: SigningKey) -> None:
    now = time.time()
    token = issuer_for(key).issue("dashboard", frozenset({"orders:read", "a:b"}), now)
    grant = verify_token(token, trusted(key))
    assert grant.client_id == "dashboard"
    assert grant.scopes == frozenset({"orders:read", "a:b"})
    assert grant.issuer == ISSUER
    assert grant.expires_at == int(now) + TTL
    claims = jwt.decode(token, options={"verify_signature": False})
    assert grant.token_id == claims["jti"]


def test_issued_claims_and_header(key: SigningKey) -> None:
    now = 1_700_000_000.5
    token = issuer_for(key).issue("dashboard", frozenset({"b", "a"}), now)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == key.algorithm
    assert header["kid"] == key.kid
    assert header["typ"] == "at+jwt"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert claims["client_id"] == "dashboard"
    assert claims["sub"] == "dashboard"
    assert claims["iat"] == 1_700_000_000
    assert claims["exp"] == 1_700_000_000 + TTL
    assert claims["scope"] == "a b"
    assert isinstance(claims["jti"], str)
    assert len(claims["jti"]) >= 16


def test_every_token_has_its_own_jti(key: SigningKey) -> None:
    issuer = issuer_for(key)
    now = time.time()
    jtis = {
        jwt.decode(issuer.issue("c", frozenset(), now), options={"verify_signature": False})["jti"]
        for _ in range(20)
    }
    assert len(jtis) == 20


def test_a_token_without_scopes_grants_none(key: SigningKey) -> None:
    token = issuer_for(key).issue("c", frozenset(), time.time())
    assert verify_token(token, trusted(key)).scopes == frozenset()


def test_public_jwk_carries_kid_alg_and_no_private_part(key: SigningKey) -> None:
    jwk = key.public_jwk()
    assert jwk["kid"] == key.kid
    assert jwk["alg"] == key.algorithm
    assert jwk["use"] == "sig"
    assert jwk["kty"] == {"ES256": "EC", "RS256": "RSA"}[key.algorithm]
    assert "d" not in jwk


@pytest.mark.parametrize("scp", [["x", "y"], "x y"])
def test_token_of_an_external_issuer_with_scp_and_azp(es_key: SigningKey, scp: Any) -> None:
    idp = "https://idp.example.com/"
    claims = valid_claims(iss=idp, aud="gateway", scp=scp, azp="robot")
    del claims["scope"], claims["client_id"]
    token = sign(es_key, claims)
    grant = verify_token(token, {idp: trust(es_key, issuer=idp, audience="gateway")})
    assert (grant.client_id, grant.scopes, grant.issuer) == ("robot", frozenset({"x", "y"}), idp)


# --- the signing key persists ------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_signing_key_survives_its_pem(algorithm: str) -> None:
    """What the state store keeps (kid and PKCS#8 PEM) gives back the same key."""
    first, pem = new_signing_key(algorithm)
    second = signing_key_from_pem(algorithm, first.kid, pem)
    assert second.kid == first.kid
    assert second.algorithm == algorithm
    assert second.public_jwk() == first.public_jwk()
    # A token signed before the "restart" verifies with the key loaded after it.
    token = issuer_for(first).issue("c", frozenset({"s"}), time.time())
    assert verify_token(token, trusted(second)).scopes == frozenset({"s"})


def test_new_keys_are_different() -> None:
    one, two = new_signing_key("ES256")[0], new_signing_key("ES256")[0]
    assert one.kid != two.kid
    token = issuer_for(one).issue("c", frozenset(), time.time())
    refused(token, {ISSUER: TrustedKeys(ISSUER, AUDIENCE, {one.kid: two.public_jwk()})})


# --- refusals ----------------------------------------------------------------------------------


def test_alg_none_is_refused(key: SigningKey) -> None:
    token = unsigned({"alg": "none", "typ": "JWT", "kid": key.kid}, valid_claims()) + "."
    refused(token, trusted(key), "not accepted")


def test_alg_none_without_kid_is_refused(key: SigningKey) -> None:
    token = unsigned({"alg": "none"}, valid_claims()) + "."
    refused(token, trusted(key))


def test_hs256_with_a_shared_secret_is_refused(key: SigningKey) -> None:
    token = jwt.encode(
        valid_claims(), "a-shared-secret-of-32-bytes-long", algorithm="HS256",
        headers={"kid": key.kid},
    )  # fmt: skip
    refused(token, trusted(key), "not accepted")


@pytest.mark.parametrize("encoding", ["pem", "jwk"])
def test_hs256_signed_with_the_public_key_is_refused(key: SigningKey, encoding: str) -> None:
    """The classic algorithm-confusion attack: the public key used as an HMAC secret."""
    public = key.private_key.public_key()
    secret = (
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if encoding == "pem"
        else json.dumps(key.public_jwk()).encode()
    )
    signing_input = unsigned({"alg": "HS256", "typ": "JWT", "kid": key.kid}, valid_claims())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    refused(f"{signing_input}.{b64(signature)}", trusted(key))


def test_algorithm_not_matching_the_key_type_is_refused() -> None:
    rsa_key = new_signing_key("RS256")[0]
    ec_key = new_signing_key("ES256")[0]
    # Signed with the RSA key but naming the EC key's kid.
    token = sign(rsa_key, valid_claims(), kid=ec_key.kid)
    refused(token, {ISSUER: trust(ec_key)}, "does not match")


def test_expired_beyond_leeway_is_refused(key: SigningKey) -> None:
    issued = time.time() - TTL - LEEWAY_SECONDS - 30
    token = issuer_for(key).issue("c", frozenset(), issued)
    refused(token, trusted(key), "expired")


def test_expired_within_leeway_is_accepted(key: SigningKey) -> None:
    issued = time.time() - TTL - LEEWAY_SECONDS + 30
    token = issuer_for(key).issue("c", frozenset(), issued)
    assert verify_token(token, trusted(key)).client_id == "c"


def test_leeway_is_sixty_seconds() -> None:
    assert LEEWAY_SECONDS == 60


def test_not_yet_valid_is_refused(key: SigningKey) -> None:
    later = int(time.time()) + 600
    refused(sign(key, valid_claims(nbf=later, iat=later, exp=later + 60)), trusted(key))


def test_wrong_audience_is_refused(key: SigningKey) -> None:
    token = issuer_for(key, audience="another-gateway").issue("c", frozenset(), time.time())
    refused(token, trusted(key), "(?i)audience")


@pytest.mark.parametrize("claim", ["exp", "aud", "iss"])
def test_a_missing_required_claim_is_refused(key: SigningKey, claim: str) -> None:
    claims = valid_claims()
    del claims[claim]
    refused(sign(key, claims), trusted(key))


def test_wrong_issuer_is_refused(key: SigningKey, es_key: SigningKey) -> None:
    """Our own key may not speak for another trusted issuer."""
    idp = "https://idp.example.com/"
    keys = {ISSUER: trust(key), idp: trust(es_key, issuer=idp)}
    assert verify_token(sign(key, valid_claims()), keys).issuer == ISSUER
    refused(sign(key, valid_claims(iss=idp)), keys)


def test_issuer_check_is_exact(key: SigningKey) -> None:
    # The trusted entry's issuer, not the lookup key, is what the claim must equal.
    keys = {ISSUER: TrustedKeys("streambridge-2", AUDIENCE, {key.kid: key.public_jwk()})}
    refused(sign(key, valid_claims()), keys, "issuer")


def test_untrusted_issuer_is_refused(key: SigningKey) -> None:
    token = issuer_for(key, issuer="https://evil.example/").issue("c", frozenset(), time.time())
    refused(token, trusted(key), "untrusted issuer")


def test_unknown_kid_is_refused(key: SigningKey) -> None:
    refused(sign(key, valid_claims(), kid="no-such-key"), trusted(key), "unknown signing key")


def test_missing_kid_with_several_keys_is_refused(key: SigningKey, es_key: SigningKey) -> None:
    token = jwt.encode(valid_claims(), key.private_key, algorithm=key.algorithm)
    assert verify_token(token, trusted(key)).client_id == "dashboard"  # one key: unambiguous
    refused(token, {ISSUER: trust(key, es_key)}, "unknown signing key")


def test_tampered_signature_is_refused(key: SigningKey) -> None:
    token = issuer_for(key).issue("c", frozenset({"orders:read"}), time.time())
    head, body, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    refused(f"{head}.{body}.{b64(bytes(raw))}", trusted(key))


def test_tampered_claims_are_refused(key: SigningKey) -> None:
    token = issuer_for(key).issue("c", frozenset({"orders:read"}), time.time())
    head, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["scope"] = "orders:read admin"
    refused(f"{head}.{b64(json.dumps(claims).encode())}.{signature}", trusted(key))


def test_token_signed_by_another_key_with_our_kid_is_refused(key: SigningKey) -> None:
    private = (
        ec.generate_private_key(ec.SECP256R1())
        if key.algorithm == "ES256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    forged = SigningKey(key.algorithm, key.kid, private)
    token = issuer_for(forged).issue("c", frozenset(), time.time())
    refused(token, trusted(key))


@pytest.mark.parametrize("token", ["", "garbage", "a.b", "a.b.c", "...."])
def test_malformed_tokens_are_refused(key: SigningKey, token: str) -> None:
    refused(token, trusted(key))


def test_a_verified_token_is_served_from_the_cache_until_it_expires(key: SigningKey) -> None:
    now = time.time()
    token = issuer_for(key).issue("c", frozenset({"orders:read"}), now)
    cache = VerifiedTokens()
    grant = verify_token(token, trusted(key))
    cache.put(token, grant)
    assert cache.get(token, now) == grant
    assert cache.get(token, grant.expires_at) is None  # expired: verified anew, and refused
    assert len(cache) == 0


def test_the_cache_never_lends_a_signature_to_other_claims(key: SigningKey) -> None:
    token = issuer_for(key).issue("c", frozenset({"orders:read"}), time.time())
    cache = VerifiedTokens()
    cache.put(token, verify_token(token, trusted(key)))
    head, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["scope"] = "orders:read admin"
    forged = f"{head}.{b64(json.dumps(claims).encode())}.{signature}"
    assert cache.get(forged, time.time()) is None
    refused(forged, trusted(key))


def test_the_cache_is_bounded_and_drops_its_oldest_entry_first(key: SigningKey) -> None:
    issuer, now = issuer_for(key), time.time()
    tokens = [issuer.issue(f"c{i}", frozenset(), now) for i in range(3)]
    cache = VerifiedTokens(max_entries=2)
    for token in tokens:
        cache.put(token, verify_token(token, trusted(key)))
    assert cache.get(tokens[0], now) is None
    assert cache.get(tokens[2], now) is not None

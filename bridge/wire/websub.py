"""WebSub wire rules (W3C WebSub, CONTRACT §7) and Standard Webhooks signing, as pure
functions: the hub request parser, verification URLs, ``Link`` headers, signatures and
the retry schedule.

The parser takes the request's form (and query) pairs and returns a :class:`HubRequest`
or raises :class:`HubRequestError` with a reason the subscriber can read (a 400 answer);
it never raises anything else. Unknown parameters are ignored (WebSub §5.1).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlencode, urlsplit

from bridge.errors import HubRequestError

MAX_SECRET_BYTES = 200  # WebSub §5.1: hub.secret MUST be less than 200 bytes
MAX_CALLBACK_CHARS = 2000
SignatureStyle = Literal["hub", "standard"]
Mode = Literal["subscribe", "unsubscribe"]
# Characters allowed unescaped in a request target we write on the wire ourselves.
_SAFE_TARGET = "/:@!$&'()*+,;=-._~%?"
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True, slots=True)
class HubRequest:
    mode: Mode
    topic: str  # as the subscriber sent it: a topic name or a topic URL
    callback: str
    secret: str | None
    lease_seconds: int | None
    signature: SignatureStyle


def parse_hub_request(pairs: Iterable[tuple[str, str]]) -> HubRequest:
    """The first value of each ``hub.*`` parameter; raises HubRequestError when invalid."""
    values: dict[str, str] = {}
    for name, value in pairs:
        if name.startswith("hub.") and name not in values:
            values[name] = value
    mode = values.get("hub.mode")
    if mode not in ("subscribe", "unsubscribe"):
        raise HubRequestError("hub.mode must be subscribe or unsubscribe")
    topic = values.get("hub.topic", "")
    if not topic:
        raise HubRequestError("hub.topic is required")
    callback = values.get("hub.callback", "")
    check_callback_syntax(callback)
    secret = values.get("hub.secret")
    if secret is not None:
        if secret == "":
            secret = None
        elif len(secret.encode("utf-8", errors="surrogatepass")) >= MAX_SECRET_BYTES:
            raise HubRequestError(f"hub.secret must be less than {MAX_SECRET_BYTES} bytes")
    lease: int | None = None
    raw_lease = values.get("hub.lease_seconds")
    if raw_lease:
        if not raw_lease.isascii() or not raw_lease.isdigit() or len(raw_lease) > 12:
            raise HubRequestError("hub.lease_seconds must be a positive whole number")
        lease = int(raw_lease)
        if lease <= 0:
            raise HubRequestError("hub.lease_seconds must be a positive whole number")
    style = values.get("hub.signature", "hub") or "hub"
    if style not in ("hub", "standard"):
        raise HubRequestError("hub.signature must be hub (X-Hub-Signature) or standard")
    return HubRequest(mode, topic, callback, secret, lease, style)  # type: ignore[arg-type]


def check_callback_syntax(callback: str) -> None:
    """An absolute http(s) URL with a host, no fragment, no credentials, no control chars."""
    if not callback:
        raise HubRequestError("hub.callback is required")
    if len(callback) > MAX_CALLBACK_CHARS or _CONTROL.search(callback):
        raise HubRequestError("hub.callback is not a valid URL")
    try:
        parts = urlsplit(callback)
        port = parts.port
    except ValueError:
        raise HubRequestError("hub.callback is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise HubRequestError("hub.callback must be an http or https URL")
    if not parts.hostname:
        raise HubRequestError("hub.callback has no host")
    if parts.username is not None or parts.password is not None:
        raise HubRequestError("hub.callback must not carry credentials")
    if parts.fragment:
        raise HubRequestError("hub.callback must not have a fragment")
    if port == 0:
        raise HubRequestError("hub.callback has an invalid port")


def clamp_lease(requested: int | None, default: int, low: int, high: int) -> int:
    """WebSub §5.1: the hub chooses the lease; the subscriber's wish within bounds."""
    return max(low, min(high, requested if requested is not None else default))


def new_challenge() -> str:
    """A random single-use hub.challenge (WebSub §5.3)."""
    return secrets.token_urlsafe(24)


def with_query(url: str, params: list[tuple[str, str]]) -> str:
    """``url`` with ``params`` appended, keeping the query string it already has (§5.3)."""
    base = url.partition("#")[0]  # a fragment is never sent
    joiner = "&" if "?" in base else "?"
    if base.endswith(("?", "&")):
        joiner = ""
    return base + joiner + urlencode(params, quote_via=quote)


def verification_url(
    callback: str, mode: str, topic_url: str, challenge: str, lease_seconds: int | None
) -> str:
    params = [("hub.mode", mode), ("hub.topic", topic_url), ("hub.challenge", challenge)]
    if lease_seconds is not None:
        params.append(("hub.lease_seconds", str(lease_seconds)))
    return with_query(callback, params)


def denial_url(callback: str, topic_url: str, reason: str) -> str:
    """WebSub §5.2: ``hub.mode=denied`` with ``hub.topic`` and ``hub.reason``."""
    return with_query(
        callback, [("hub.mode", "denied"), ("hub.topic", topic_url), ("hub.reason", reason)]
    )


def request_target(url: str) -> str:
    """Path and query of ``url`` as written on the request line (never empty)."""
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return quote(target, safe=_SAFE_TARGET)


def loggable(url: str) -> str:
    """A callback URL for logs: without its query string, which may carry a credential."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?…" if parts.query else "")


def link_header(hub_url: str, topic_url: str) -> str:
    """WebSub §4 discovery and §7 delivery: ``Link`` rel=hub and rel=self."""
    return f'<{hub_url}>; rel="hub", <{topic_url}>; rel="self"'


# --- signatures -------------------------------------------------------------------------


def hub_signature(secret: str, body: bytes) -> str:
    """WebSub §8: ``X-Hub-Signature: sha256=<hex HMAC of the body>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_hub_signature(secret: str, body: bytes, header: str | None) -> bool:
    """GitHub's ``X-Hub-Signature-256`` check (inbound webhooks), in constant time."""
    if not header:
        return False
    return hmac.compare_digest(hub_signature(secret, body).encode(), header.strip().encode())


def standard_key(secret: str) -> bytes:
    """The HMAC key a Standard Webhooks subscriber configures as ``whsec_<base64>``.

    A ``hub.secret`` of the form ``whsec_<base64>`` is used as that spec defines it (the
    base64 decodes to the key); any other ``hub.secret`` is the key as its UTF-8 bytes,
    i.e. the subscriber's ``whsec_`` secret is ``"whsec_" + base64(hub.secret)``.
    """
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[6:], validate=True)
        except ValueError:
            pass
    return secret.encode()


def standard_signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def delivery_headers(
    *,
    content_type: str,
    link: str,
    body: bytes,
    secret: str | None,
    style: SignatureStyle,
    webhook_id: str,
    timestamp: int,
) -> list[tuple[str, str]]:
    headers = [("Content-Type", content_type), ("Link", link)]
    if secret is not None:
        headers.append(("X-Hub-Signature", hub_signature(secret, body)))
    if style == "standard":
        headers += [("webhook-id", webhook_id), ("webhook-timestamp", str(timestamp))]
        if secret is not None:
            signature = standard_signature(standard_key(secret), webhook_id, timestamp, body)
            headers.append(("webhook-signature", signature))
    return headers


# --- retries ------------------------------------------------------------------------------


def retry_delay(
    attempt: int, first: float, maximum: float, rng: random.Random | None = None
) -> float:
    """Delay before attempt ``attempt + 1`` after ``attempt`` failures: exponential
    (first · 2^(attempt-1), capped at ``maximum``) with "equal jitter" — half fixed,
    half random — so retries spread out but never come sooner than half the step."""
    step: float = min(maximum, first * 2.0 ** min(max(attempt - 1, 0), 62))
    draw: float = rng.random() if rng is not None else random.random()  # noqa: S311
    return step / 2 + step / 2 * draw

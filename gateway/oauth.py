"""The built-in OAuth2 server: client_credentials grant (RFC 6749 §4.4) and the JWKS.

Errors follow RFC 6749 §5.2 (``error``, ``error_description``), which OAuth clients parse;
the body also carries the RFC 9457 members so it reads as problem details too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from typing import Any
from urllib.parse import parse_qsl, unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bridge.policy import grant_scopes
from bridge.sandbox import SANDBOX, owner_of
from gateway.runtime import Runtime

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def oauth_error(
    status: int, error: str, description: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {
        "error": error,
        "error_description": description,
        "type": "about:blank",
        "status": status,
        "detail": description,
    }
    return JSONResponse(body, status_code=status, headers={**NO_STORE, **(headers or {})})


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    client_id, _, secret = decoded.partition(":")
    # RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


def _address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def router(runtime: Runtime) -> APIRouter:
    api = APIRouter()

    @api.post("/oauth2/token", tags=["oauth2"])
    async def token(request: Request) -> Any:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("application/x-www-form-urlencoded"):
            return oauth_error(
                400, "invalid_request", "the body must be application/x-www-form-urlencoded"
            )
        form = dict(
            parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        )
        basic = _basic_credentials(request.headers.get("authorization", ""))
        if basic is not None and (
            ("client_id" in form and form["client_id"] != basic[0]) or "client_secret" in form
        ):
            return oauth_error(400, "invalid_request", "use one client authentication method")
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        # Failures count per client id, or per address for an id nobody has (§4c); a
        # refused request costs no scrypt.
        known = client_id in runtime.catalog.applications
        attempts_key = f"client:{client_id}" if known else f"address:{_address(request)}"
        wait = await runtime.token_attempts.retry_after(attempts_key)
        if wait is not None:
            return oauth_error(
                429,
                "too_many_requests",
                "too many failed attempts; try again later",
                {"Retry-After": str(wait)},
            )
        # scrypt takes tens of milliseconds: off the event loop, on its own threads.
        application = await asyncio.get_running_loop().run_in_executor(
            runtime.secret_checks, runtime.catalog.authenticate_client, client_id, secret
        )
        if application is None:
            await runtime.token_attempts.failed(attempts_key)
            challenge = {"WWW-Authenticate": 'Basic realm="streambridge"'} if basic else None
            return oauth_error(401, "invalid_client", "client authentication failed", challenge)
        if form.get("grant_type") != "client_credentials":
            return oauth_error(
                400, "unsupported_grant_type", "only grant_type=client_credentials is supported"
            )
        requested = form["scope"].split() if form.get("scope", "").strip() else None
        owner = owner_of(client_id)  # sandbox keys act for their application (§13)
        key_type = None if owner is None else SANDBOX
        client_id = owner or client_id
        try:
            available = runtime.catalog.available_scopes(client_id)
            if requested is not None:  # a mask is lifted only for a token that asks
                available |= runtime.catalog.unmasking_scopes(client_id)
            scopes = grant_scopes(requested, available)
        except ValueError as exc:
            return oauth_error(400, "invalid_scope", str(exc))
        assert runtime.authority is not None
        issuer = runtime.authority.issuer
        access_token = issuer.issue(
            client_id, scopes, time.time(), application.generation, key_type
        )
        return JSONResponse(
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": issuer.ttl,
                "scope": " ".join(sorted(scopes)),
            },
            headers=NO_STORE,
        )

    @api.get("/.well-known/jwks.json", tags=["oauth2"])
    async def jwks() -> Any:
        assert runtime.authority is not None
        return JSONResponse(
            runtime.authority.jwks(), headers={"Cache-Control": "public, max-age=300"}
        )

    return api

"""The developer portal's JSON routes (CONTRACT §12): accounts, the catalogue, an API's
page, and a developer's own applications, subscriptions and tokens.

A developer sees and changes only the applications they created here (the store's
ownership table); every write is CSRF-checked by :class:`~gateway.portal.sessions.Sessions`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from bridge.asyncapi import export_document
from bridge.config import Api
from bridge.policy import grant_scopes
from bridge.secrets import dummy_hash, hash_secret, verify_secret
from gateway.portal.sessions import Sessions, SignInLimiter
from gateway.registration import (
    SubscriptionIn,
    new_application,
    new_subscription,
    subscription_json,
)
from gateway.runtime import Runtime

VISIBLE = ("PUBLISHED", "DEPRECATED")
WRONG = "wrong username or password"  # the same for unknown users (no account probing)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Credentials(_Body):
    username: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: str = Field(min_length=8, max_length=200)


class SignIn(_Body):
    username: str = Field(max_length=64)
    password: str = Field(max_length=200)


class ApplicationName(_Body):
    name: str = Field(min_length=1, max_length=200)


class Subscribe(_Body):
    application: str
    api: str
    version: str
    tier: str


class TokenRequest(_Body):
    application: str
    scopes: list[str] = []


def api_page(api: Api, runtime: Runtime) -> dict[str, Any]:
    """What an API's page shows: topics with mode and scopes, tiers, the AsyncAPI document."""
    tiers = runtime.catalog.tiers
    return {
        "name": api.name,
        "version": api.version,
        "protocol": api.protocol,
        "state": api.state,
        "description": api.description,
        "base_path": api.base_path,
        "topics": [
            {"name": t.name, "mode": t.mode, "scopes": t.scopes, "path": api.base_path + t.name}
            for t in api.topics
        ],
        "tiers": [
            {"name": name, **tiers[name].model_dump(mode="json", exclude_none=True)}
            for name in (api.tiers or sorted(tiers))
            if name in tiers
        ],
        "asyncapi": export_document(api, public_url=runtime.config.gateway.public_url),
    }


def router(runtime: Runtime, sessions: Sessions, limiter: SignInLimiter) -> APIRouter:
    api = APIRouter(prefix="/portal/api", tags=["portal"], include_in_schema=False)

    def store() -> Any:
        assert runtime.store is not None
        return runtime.store

    def visible(name: str, version: str) -> Api:
        found = runtime.catalog.api(name, version)
        if found is None or found.state not in VISIBLE:
            raise HTTPException(404, f"no API {name} {version}")
        return found

    async def owned(username: str, client_id: str) -> None:
        if client_id not in await store().applications_of(username):
            raise HTTPException(404, f"you have no application {client_id}")

    # --- accounts --------------------------------------------------------------------------
    @api.get("/session")
    async def session(request: Request) -> dict[str, Any]:
        found = await sessions.find(request)
        publisher = found is not None and found.publisher
        return {
            "self_signup": runtime.config.portal.self_signup,
            "username": found.username if found else None,
            "role": None if found is None else ("publisher" if publisher else "developer"),
            "csrf": found.csrf if found else None,
            "brokers": sorted(runtime.config.brokers) if publisher else [],
        }

    @api.post("/signup", status_code=201)
    async def signup(body: Credentials, response: Response) -> dict[str, Any]:
        if not runtime.config.portal.self_signup:
            raise HTTPException(403, "self sign-up is off (portal.self_signup)")
        password_hash = await asyncio.to_thread(hash_secret, body.password)
        await store().create_developer(body.username, password_hash, time.time())
        opened = await sessions.open(response, body.username)
        return {"username": body.username, "role": "developer", "csrf": opened.csrf}

    @api.post("/signin")
    async def signin(body: SignIn, request: Request, response: Response) -> dict[str, Any]:
        stored = await store().password_hash(body.username)
        # Failures count per username, and per source address for unknown usernames, so
        # guessing at one account never locks out others behind the same address (§4c).
        address = request.client.host if request.client else "unknown"
        keys = (f"user:{body.username}",) if stored else (f"address:{address}",)
        await limiter.check(*keys)
        # scrypt either way: an unknown user costs what a wrong password costs.
        matches = await asyncio.to_thread(verify_secret, body.password, stored or dummy_hash())
        if stored is None or not matches:
            await limiter.failed(*keys)
            raise HTTPException(401, WRONG)
        opened = await sessions.open(response, body.username)
        return {"username": body.username, "role": "developer", "csrf": opened.csrf}

    @api.post("/signout", status_code=204)
    async def signout(request: Request) -> Response:
        await sessions.require(request, "any")
        answer = Response(status_code=204)
        await sessions.close(request, answer)
        return answer

    # --- the catalogue ---------------------------------------------------------------------
    @api.get("/apis")
    async def catalogue() -> list[dict[str, Any]]:
        shown = [a for a in runtime.catalog.apis() if a.state in VISIBLE]
        return [
            {
                "name": a.name,
                "version": a.version,
                "protocol": a.protocol,
                "state": a.state,
                "description": a.description,
            }
            for a in sorted(shown, key=lambda a: (a.name, a.version))
        ]

    @api.get("/apis/{name}/{version}")
    async def page(name: str, version: str) -> dict[str, Any]:
        return api_page(visible(name, version), runtime)

    @api.get("/apis/{name}/{version}/asyncapi.json")
    async def download(name: str, version: str) -> JSONResponse:
        document = export_document(
            visible(name, version), public_url=runtime.config.gateway.public_url
        )
        filename = f"{name}-{version}-asyncapi.json"
        return JSONResponse(
            document, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
        )

    # --- a developer's applications ---------------------------------------------------------
    @api.get("/applications")
    async def applications(request: Request) -> list[dict[str, Any]]:
        me = await sessions.require(request)
        assert me.username is not None
        mine = set(await store().applications_of(me.username))
        catalog = runtime.catalog
        return [
            {
                "client_id": app.client_id,
                "name": app.name,
                "subscriptions": [
                    subscription_json(s)
                    for s in catalog.subscription_records.values()
                    if s.client_id == app.client_id
                ],
                "scopes": sorted(catalog.available_scopes(app.client_id)),
            }
            for app in sorted(catalog.applications.values(), key=lambda a: a.name)
            if app.client_id in mine
        ]

    @api.post("/applications", status_code=201)
    async def create(body: ApplicationName, request: Request) -> dict[str, Any]:
        me = await sessions.require(request)
        assert me.username is not None
        record, secret = await new_application(runtime, body.name)
        await store().own_application(me.username, record.client_id)
        return {"client_id": record.client_id, "name": record.name, "client_secret": secret}

    @api.post("/subscriptions", status_code=201)
    async def subscribe(body: Subscribe, request: Request) -> dict[str, Any]:
        me = await sessions.require(request)
        assert me.username is not None
        await owned(me.username, body.application)
        visible(body.api, body.version)
        record = await new_subscription(runtime, SubscriptionIn(**body.model_dump()))
        return subscription_json(record)

    @api.post("/tokens")
    async def token(body: TokenRequest, request: Request) -> dict[str, Any]:
        """A token for one's own application, as the token endpoint would grant it."""
        me = await sessions.require(request)
        assert me.username is not None and runtime.authority is not None
        await owned(me.username, body.application)
        app = runtime.catalog.applications[body.application]
        available = runtime.catalog.available_scopes(app.client_id)
        try:
            scopes = grant_scopes(body.scopes or None, available)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        issuer = runtime.authority.issuer
        access_token = issuer.issue(app.client_id, scopes, time.time(), app.generation)
        return {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": issuer.ttl,
            "scope": " ".join(sorted(scopes)),
        }

    return api

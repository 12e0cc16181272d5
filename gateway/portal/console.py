"""The publisher console's JSON routes (CONTRACT §12): sign-in with the admin token, then
the management API (§8) through the session, and live figures per API for the charts.

A publisher's request is handed to the management routes in-process with the admin
token added, so the console has exactly the API's rules and answers (a 422 of an import
names its reasons). The token itself never reaches the page.
"""

from __future__ import annotations

import hmac
import time
from collections import defaultdict
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from bridge.lifecycle import allowed_actions
from gateway.management import admin_dependency
from gateway.portal.sessions import Sessions, SignInLimiter
from gateway.runtime import Runtime

MAX_UPLOAD_BYTES = 1_048_576
FORWARDED = ("apis", "subscriptions", "webhooks", "tiers", "applications")


class AdminSignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    admin_token: str = Field(max_length=500)


async def _body(request: Request) -> bytes:
    """The request body, refused with 413 past MAX_UPLOAD_BYTES before it is all read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"uploads are limited to {MAX_UPLOAD_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"uploads are limited to {MAX_UPLOAD_BYTES} bytes")
    return bytes(body)


def router(
    runtime: Runtime, control: FastAPI, sessions: Sessions, limiter: SignInLimiter
) -> APIRouter:
    api = APIRouter(prefix="/portal/api", tags=["portal"], include_in_schema=False)

    def admin_token() -> str | None:
        token = runtime.config.gateway.admin_token
        return None if token is None else token.get_secret_value()

    @api.post("/signin/publisher")
    async def signin(body: AdminSignIn, request: Request, response: Response) -> dict[str, Any]:
        address = request.client.host if request.client else "unknown"
        await limiter.check(f"address:{address}")
        expected = admin_token()
        if expected is None or not hmac.compare_digest(
            body.admin_token.encode(), expected.encode()
        ):
            await limiter.failed(f"address:{address}")
            raise HTTPException(401, "wrong admin token")
        opened = await sessions.open(response, None)
        return {"username": None, "role": "publisher", "csrf": opened.csrf}

    @api.api_route("/manage/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def manage(path: str, request: Request) -> Response:
        """``/portal/api/manage/<x>`` is ``/api/v1/<x>`` of the management API."""
        await sessions.require(request, "publisher")
        if path.split("/", 1)[0] not in FORWARDED:
            raise HTTPException(404, f"no management resource {path}")
        token = admin_token()
        if token is None:
            raise HTTPException(503, "the management API is off: set gateway.admin_token")
        headers = {"Authorization": f"Bearer {token}"}
        if "content-type" in request.headers:
            headers["Content-Type"] = request.headers["content-type"]
        transport = httpx.ASGITransport(app=control)
        async with httpx.AsyncClient(transport=transport, base_url="http://portal") as client:
            answer = await client.request(
                request.method,
                f"/api/v1/{path}",
                params=request.query_params,
                content=await _body(request),
                headers=headers,
            )
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
        )

    @api.get("/stats")
    async def stats(request: Request) -> dict[str, Any]:
        """Per API: events read and delivered so far, open connections (the page derives
        the rates from two polls)."""
        await sessions.require(request, "publisher")
        read: dict[tuple[str, str], float] = defaultdict(float)
        for (name, version, *_), value in runtime.metrics.events_in.children.items():
            read[(name, version)] += value.value
        delivered: dict[tuple[str, str], float] = defaultdict(float)
        for (name, version, *_), value in runtime.metrics.events_out.children.items():
            delivered[(name, version)] += value.value
        connections = runtime.connections.open_by_api()
        return {
            "at": time.time(),
            "apis": {
                f"{a.name} {a.version}": {
                    "events_in": read.get((a.name, a.version), 0.0),
                    "events_out": delivered.get((a.name, a.version), 0.0),
                    "connections": connections.get((a.name, a.version), 0),
                    "actions": allowed_actions(a.state),
                }
                for a in runtime.catalog.apis()
            },
        }

    return api


def accounts_router(runtime: Runtime) -> APIRouter:
    """``/api/v1/developers``: the operator lists and deletes developer accounts; a deleted
    developer's sessions end at once (their applications stay, managed as any other)."""
    api = APIRouter(
        prefix="/api/v1/developers", dependencies=[admin_dependency(runtime)], tags=["portal"]
    )

    @api.get("")
    async def developers() -> list[dict[str, Any]]:
        assert runtime.store is not None
        return [{"username": name} for name in await runtime.store.developers()]

    @api.delete("/{username}", status_code=204)
    async def delete(username: str) -> Response:
        assert runtime.store is not None
        await runtime.store.delete_developer(username)
        return Response(status_code=204)

    return api

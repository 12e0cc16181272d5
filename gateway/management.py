"""Management API under /api/v1 (CONTRACT §8), behind the admin token.

Routes stay thin: each validates, writes to the state store, then asks the runtime to
refresh, which applies the change to open streams at once (other gateways on the same
store notice the new revision within a second).
"""

from __future__ import annotations

import asyncio
import hmac
import re
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import ValidationError

from bridge.asyncapi import export_document, import_document, to_yaml
from bridge.config import Api, Config, Tier, expression_context, semantic_problems
from bridge.errors import ConfigError, Problem
from bridge.lifecycle import transition
from bridge.sandbox import SANDBOX, owner_of, sandbox_client_id
from bridge.secrets import hash_secret, new_secret
from bridge.store import ApplicationRecord, NotFound, SubscriptionRecord
from gateway.registration import (
    ApplicationIn,
    Body,
    SubscriptionIn,
    application_json,
    new_application,
    new_subscription,
    subscription_json,
)
from gateway.runtime import Runtime


class LifecycleIn(Body):
    action: Literal["publish", "deprecate", "retire", "block", "unblock"]


def admin_dependency(runtime: Runtime) -> Any:
    async def check(request: Request) -> None:
        expected = runtime.config.gateway.admin_token
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="streambridge-admin"'}
        if expected is None:
            raise HTTPException(
                401, "the management API is off: set gateway.admin_token", headers=challenge
            )
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), expected.get_secret_value().encode()
        ):
            raise HTTPException(401, "a valid admin bearer token is required", headers=challenge)

    return Depends(check)


# The API body is parsed by api_body, not by FastAPI, so /openapi.json gets its schema here.
_API_SCHEMA: dict[str, Any] = Api.model_json_schema(ref_template="#/components/schemas/{model}")
_API_BODY_DOCS: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Api"}}},
    }
}


def document_api_body(app: FastAPI) -> None:
    """Adds the Api model and the models it uses to ``app``'s OpenAPI components."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schemas = generate().setdefault("components", {}).setdefault("schemas", {})
            api = dict(_API_SCHEMA)
            for name, model in api.pop("$defs", {}).items():
                schemas.setdefault(name, model)
            schemas.setdefault("Api", api)
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


def api_body(runtime: Runtime) -> Any:
    """The request body as an Api whose expressions are checked against the running
    config's ``gateway.limits`` (CONTRACT §4c). FastAPI's own body parsing passes no
    validation context, so it could only check them against the defaults."""

    async def parse(request: Request) -> Api:
        try:
            raw = await request.json()
        except ValueError as exc:
            error = {"type": "json_invalid", "loc": ("body",), "msg": f"invalid JSON: {exc}"}
            raise RequestValidationError([error]) from exc
        limits = runtime.config.gateway.limits.expressions
        try:
            return Api.model_validate(raw, context=expression_context(limits))
        except ValidationError as exc:
            errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
            raise RequestValidationError(errors) from exc

    return Depends(parse)


def api_json(api: Api) -> dict[str, Any]:
    return api.model_dump(mode="json", exclude_none=True)


def validate_api(runtime: Runtime, api: Api) -> None:
    """The config file's cross-field rules, applied to one API among the running ones.
    (A duplicate name and version is the store's Conflict: 409, not 422.)"""
    catalog = runtime.catalog
    others = [a for a in catalog.apis() if (a.name, a.version) != (api.name, api.version)]
    candidate = Config.model_construct(
        gateway=runtime.config.gateway,
        auth=runtime.config.auth,
        websub=runtime.config.websub,
        brokers=runtime.config.brokers,
        tiers=catalog.tiers,
        apis=[*others, api],
        applications=[],
    )
    prefix = f"apis[{len(others)}]"
    problems = [
        Problem("body" + p.path.removeprefix(prefix), p.message)
        for p in semantic_problems(candidate)
        if p.path.startswith(prefix)
    ]
    if problems:
        raise ConfigError(problems)


def router(runtime: Runtime) -> APIRouter:
    api = APIRouter(prefix="/api/v1", dependencies=[admin_dependency(runtime)], tags=["management"])

    def store() -> Any:
        assert runtime.store is not None
        return runtime.store

    async def changed() -> None:
        await runtime.refresh()

    # --- APIs ------------------------------------------------------------------------
    @api.get("/apis")
    async def list_apis() -> list[dict[str, Any]]:
        return [api_json(a) for a in runtime.catalog.apis()]

    parsed_api = api_body(runtime)

    @api.post("/apis", status_code=201, openapi_extra=_API_BODY_DOCS)
    async def create_api(body: Api = parsed_api) -> JSONResponse:
        if "state" not in body.model_fields_set:
            body = body.model_copy(update={"state": "CREATED"})
        elif body.state != "CREATED":
            raise ConfigError(
                [
                    Problem(
                        "body.state",
                        "new APIs start CREATED; use lifecycle actions to change the state",
                    )
                ]
            )
        validate_api(runtime, body)
        await store().create_api(body)
        await changed()
        return JSONResponse(
            api_json(body),
            status_code=201,
            headers={"Location": f"/api/v1/apis/{body.name}/{body.version}"},
        )

    @api.post("/apis/import", status_code=201)
    async def import_api(
        request: Request,
        broker: str | None = Query(default=None),
        endpoint: str | None = Query(default=None, description="the server to front (§13)"),
        protocol: Literal["sse", "websocket", "websub"] | None = Query(default=None),
        name: str | None = Query(default=None),
        context: str | None = Query(default=None),
    ) -> JSONResponse:
        document = import_document(
            await request.body(),
            broker=broker,
            endpoint=endpoint,
            protocol=protocol,
            name=name,
            context=context,
            expressions=runtime.config.gateway.limits.expressions,
        )
        validate_api(runtime, document)
        await store().create_api(document)
        await changed()
        return JSONResponse(api_json(document), status_code=201)

    def _get(name: str, version: str) -> Api:
        found = runtime.catalog.api(name, version)
        if found is None:
            raise NotFound(f"no API {name} {version}")
        return found

    @api.get("/apis/{name}/{version}")
    async def get_api(name: str, version: str) -> dict[str, Any]:
        return api_json(_get(name, version))

    @api.put("/apis/{name}/{version}", openapi_extra=_API_BODY_DOCS)
    async def update_api(name: str, version: str, body: Api = parsed_api) -> dict[str, Any]:
        current = _get(name, version)
        if (body.name, body.version) != (name, version):
            raise ConfigError(
                [
                    Problem(
                        "body.name",
                        "name and version are the API's identity; they must match the URL",
                    )
                ]
            )
        if "state" not in body.model_fields_set:
            body = body.model_copy(update={"state": current.state})
        elif body.state != current.state:
            raise ConfigError([Problem("body.state", "change the state with a lifecycle action")])
        validate_api(runtime, body)
        await store().update_api(body)
        await changed()
        return api_json(body)

    @api.delete("/apis/{name}/{version}", status_code=204)
    async def delete_api(name: str, version: str) -> Response:
        await store().delete_api(name, version)
        await changed()
        return Response(status_code=204)

    @api.post("/apis/{name}/{version}/lifecycle")
    async def lifecycle(name: str, version: str, body: LifecycleIn) -> dict[str, Any]:
        current = _get(name, version)
        updated = current.model_copy(update={"state": transition(current.state, body.action)})
        await store().update_api(updated)
        await changed()
        return api_json(updated)

    @api.get("/apis/{name}/{version}/asyncapi", response_model=None)
    async def asyncapi(name: str, version: str, request: Request) -> Response:
        document = export_document(
            _get(name, version),
            public_url=runtime.config.gateway.public_url,
            tiers=runtime.catalog.tiers,
        )
        accept = request.headers.get("accept", "")
        if re.search(r"(application|text)/(x-)?yaml", accept):
            return PlainTextResponse(to_yaml(document), media_type="application/yaml")
        return JSONResponse(document)

    # --- applications ----------------------------------------------------------------------
    @api.get("/applications")
    async def list_applications() -> list[dict[str, Any]]:
        apps = runtime.catalog.applications.values()
        return [application_json(a) for a in apps if owner_of(a.client_id) is None]

    @api.post("/applications", status_code=201)
    async def create_application(body: ApplicationIn) -> JSONResponse:
        record, secret = await new_application(runtime, body.name, body.client_id)
        return JSONResponse(application_json(record, secret), status_code=201)

    @api.get("/applications/{client_id}")
    async def get_application(client_id: str) -> dict[str, Any]:
        found = runtime.catalog.applications.get(client_id)
        if found is None:
            raise NotFound(f"no application {client_id}")
        return application_json(found)

    @api.post("/applications/{client_id}/keys")
    async def regenerate_keys(
        client_id: str,
        key_type: Literal["production", "sandbox"] = Query(default="production", alias="type"),
    ) -> dict[str, Any]:
        """A new secret; every token issued before is refused and its streams end.
        ``?type=sandbox``: the application's sandbox keys, made on first use (§13)."""
        secret = new_secret()
        secret_hash = await asyncio.to_thread(hash_secret, secret)
        if key_type == "sandbox":
            owner = runtime.catalog.applications.get(client_id)
            if owner is None or owner_of(client_id) is not None:
                raise NotFound(f"no application {client_id}")
            sandbox = sandbox_client_id(client_id)
            if sandbox in runtime.catalog.applications:
                record = await store().set_application_secret(sandbox, secret_hash)
            else:
                record = ApplicationRecord(sandbox, f"{owner.name} (sandbox)", secret_hash)
                await store().create_application(record)
            await changed()
            return {**application_json(record, secret), "key_type": SANDBOX}
        record = await store().set_application_secret(client_id, secret_hash)
        await changed()
        return application_json(record, secret)

    @api.delete("/applications/{client_id}", status_code=204)
    async def delete_application(client_id: str) -> Response:
        await store().delete_application(client_id)
        if sandbox_client_id(client_id) in runtime.catalog.applications:
            await store().delete_application(sandbox_client_id(client_id))
        await changed()
        return Response(status_code=204)

    # --- subscriptions --------------------------------------------------------------------
    @api.get("/subscriptions")
    async def list_subscriptions(application: str | None = None) -> list[dict[str, Any]]:
        return [
            subscription_json(s)
            for s in runtime.catalog.subscription_records.values()
            if application is None or s.client_id == application
        ]

    @api.post("/subscriptions", status_code=201)
    async def create_subscription(body: SubscriptionIn) -> JSONResponse:
        record = await new_subscription(runtime, body)
        return JSONResponse(subscription_json(record), status_code=201)

    def _subscription(id: str) -> SubscriptionRecord:
        found = runtime.catalog.subscription_records.get(id)
        if found is None:
            raise NotFound(f"no subscription {id}")
        return found

    @api.get("/subscriptions/{id}")
    async def get_subscription(id: str) -> dict[str, Any]:
        return subscription_json(_subscription(id))

    @api.post("/subscriptions/{id}/block")
    async def block_subscription(id: str) -> dict[str, Any]:
        _subscription(id)
        record = await store().set_subscription_state(id, "BLOCKED")
        await changed()
        return subscription_json(record)

    @api.post("/subscriptions/{id}/unblock")
    async def unblock_subscription(id: str) -> dict[str, Any]:
        _subscription(id)
        record = await store().set_subscription_state(id, "ACTIVE")
        await changed()
        return subscription_json(record)

    @api.delete("/subscriptions/{id}", status_code=204)
    async def delete_subscription(id: str) -> Response:
        await store().delete_subscription(id)
        await changed()
        return Response(status_code=204)

    # --- tiers --------------------------------------------------------------------------
    @api.get("/tiers")
    async def list_tiers() -> dict[str, Any]:
        return {
            name: tier.model_dump(exclude_none=True) for name, tier in runtime.catalog.tiers.items()
        }

    @api.get("/tiers/{name}")
    async def get_tier(name: str) -> dict[str, Any]:
        tier = runtime.catalog.tiers.get(name)
        if tier is None:
            raise NotFound(f"no tier {name}")
        return tier.model_dump(exclude_none=True)

    @api.put("/tiers/{name}")
    async def put_tier(name: str, body: Tier) -> dict[str, Any]:
        if not re.fullmatch(r"[A-Za-z0-9_.~-]{1,64}", name):
            raise ConfigError([Problem("name", "letters, digits, _ . ~ - (at most 64)")])
        await store().put_tier(name, body)
        await changed()
        return body.model_dump(exclude_none=True)

    @api.delete("/tiers/{name}", status_code=204)
    async def delete_tier(name: str) -> Response:
        await store().delete_tier(name)
        await changed()
        return Response(status_code=204)

    return api

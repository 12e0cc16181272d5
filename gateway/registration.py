"""Applications and subscriptions as the management API and the developer portal make
them (CONTRACT §8, §12): one set of rules, whoever asks."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field

from bridge.errors import ConfigError, Problem
from bridge.sandbox import owner_of
from bridge.secrets import hash_secret, new_secret
from bridge.store import ApplicationRecord, SubscriptionRecord
from gateway.runtime import Runtime


class Body(BaseModel):
    """A request body: unknown fields are a 422, not ignored."""

    model_config = ConfigDict(extra="forbid")


class ApplicationIn(Body):
    name: str = Field(min_length=1, max_length=200)
    client_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.~-]{3,100}$")


class SubscriptionIn(Body):
    application: str
    api: str
    version: str
    tier: str


def application_json(app: ApplicationRecord, secret: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"client_id": app.client_id, "name": app.name}
    if secret is not None:
        body["client_secret"] = secret  # shown once, never stored in clear
    return body


def subscription_json(sub: SubscriptionRecord) -> dict[str, Any]:
    return {
        "id": sub.id,
        "application": sub.client_id,
        "api": sub.api,
        "version": sub.version,
        "tier": sub.tier,
        "state": sub.state,
    }


async def new_application(
    runtime: Runtime, name: str, client_id: str | None = None
) -> tuple[ApplicationRecord, str]:
    """A new application and its secret, shown once (here and in the portal)."""
    assert runtime.store is not None
    if client_id is not None and owner_of(client_id) is not None:
        raise ConfigError([Problem("body.client_id", "~sandbox names sandbox keys")])
    secret = new_secret()
    record = ApplicationRecord(
        client_id or secrets.token_urlsafe(12), name, await asyncio.to_thread(hash_secret, secret)
    )
    await runtime.store.create_application(record)
    await runtime.refresh()
    return record, secret


async def new_subscription(runtime: Runtime, body: SubscriptionIn) -> SubscriptionRecord:
    """CONTRACT §8: a known application, API and offered tier; PUBLISHED APIs only."""
    assert runtime.store is not None
    target = runtime.catalog.api(body.api, body.version)
    problems = []
    if body.application not in runtime.catalog.applications:
        problems.append(Problem("body.application", f"no application {body.application}"))
    if target is None:
        problems.append(Problem("body.api", f"no API {body.api} {body.version}"))
    if body.tier not in runtime.catalog.tiers:
        problems.append(Problem("body.tier", f"unknown tier {body.tier!r}"))
    elif target is not None and target.tiers and body.tier not in target.tiers:
        problems.append(
            Problem(
                "body.tier", f"tier {body.tier} is not offered by {target.name} {target.version}"
            )
        )
    if problems:
        raise ConfigError(problems)
    assert target is not None
    if target.state != "PUBLISHED":
        raise HTTPException(
            409,
            f"new subscriptions are accepted only for PUBLISHED APIs; "
            f"{target.name} {target.version} is {target.state}",
        )
    record = await runtime.store.create_subscription(
        body.application, body.api, body.version, body.tier
    )
    await runtime.refresh()
    return record

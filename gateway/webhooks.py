"""Management of webhooks under ``/api/v1/webhooks`` (CONTRACT §8), behind the admin token:
dead letters (list, replay one, replay all) and WebSub subscriptions (list, end one).

A replayed dead letter goes back into its subscription's queue with fresh attempts and
the same ``webhook-id``, ahead of newer deliveries (the queue is ordered by creation).
Secrets are never shown: a subscription says only whether it has one.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Response

from bridge.store.records import DeliveryRecord, WebSubRecord
from gateway.management import admin_dependency
from gateway.runtime import Runtime
from gateway.websub.service import WebSubService


def dead_letter_json(record: DeliveryRecord) -> dict[str, Any]:
    return {
        "id": record.webhook_id,
        "subscription": record.subscription_id,
        "api": record.api,
        "version": record.version,
        "topic": record.topic,
        "content_type": record.content_type,
        "payload": record.payload,
        "attempts": record.attempts,
        "last_error": record.last_error,
        "created_at": record.created_at,
        "state": record.state,
    }


def subscription_json(record: WebSubRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "api": record.api,
        "version": record.version,
        "topic": record.topic,
        "callback": record.callback,
        "application": record.client_id,
        "has_secret": record.secret is not None,
        "signature": record.signature,
        "lease_seconds": record.lease_seconds,
        "expires_at": record.expires_at,
    }


def router(runtime: Runtime) -> APIRouter:
    api = APIRouter(
        prefix="/api/v1/webhooks", dependencies=[admin_dependency(runtime)], tags=["webhooks"]
    )

    def service() -> WebSubService:
        if runtime.websub is None:
            raise HTTPException(503, "the gateway is starting")
        return runtime.websub

    @api.get("/deadletters")
    async def list_dead_letters(
        api_name: str | None = Query(default=None, alias="api"),
        version: str | None = None,
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        letters = await service().store.dead_letters(api_name, version, limit)
        return [dead_letter_json(letter) for letter in letters]

    @api.post("/deadletters/replay")
    async def replay_all(api_name: str | None = Query(default=None, alias="api")) -> Any:
        websub = service()
        replayed = await websub.store.replay_all(api_name)
        for record in replayed:
            websub.requeued(record.subscription_id)
        return {"replayed": [record.webhook_id for record in replayed]}

    @api.post("/deadletters/{id}/replay")
    async def replay(id: str) -> dict[str, Any]:
        websub = service()
        record = await websub.store.replay(id)  # NotFound → 404, Conflict → 409
        websub.requeued(record.subscription_id)
        return {**dead_letter_json(record), "state": "pending", "attempts": 0}

    @api.get("/subscriptions")
    async def list_subscriptions(
        api_name: str | None = Query(default=None, alias="api"),
    ) -> list[dict[str, Any]]:
        records = await service().store.subscriptions(api_name)
        return [subscription_json(record) for record in records]

    @api.delete("/subscriptions/{id}", status_code=204)
    async def end_subscription(id: str) -> Response:
        websub = service()
        record = await websub.store.get_subscription(id)
        if record is None:
            raise HTTPException(404, f"no WebSub subscription {id}")
        websub.feeds.ended(id)
        await websub.store.delete_subscription(id)
        return Response(status_code=204)

    return api

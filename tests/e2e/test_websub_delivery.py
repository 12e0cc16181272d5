"""Webhook delivery end to end (issue 5 parts 2 and 5): order, retries, dead letters and
their replay, 410 Gone, Standard Webhooks signatures, metrics, inbound webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import httpx

from tests.e2e.helpers import assert_problem, eventually, fetch_token, metric, metrics_text, room
from tests.e2e.websub_setup import ADMIN, BASE, HOOKS_SECRET, INBOUND_SECRET, Hub, quiet


async def test_deliveries_keep_their_order_through_retries(hub: Hub) -> None:
    r = room()
    path = f"/order/{r}"
    hub.receiver.behaviour(path).statuses = [500, 503]  # the first event needs 3 attempts
    await hub.subscribe(f"/t/{r}", path)
    await hub.verified(path)
    for n in range(20):
        await hub.publish(r, {"n": n})
    posts = await hub.posts(path, 22)
    assert [json.loads(p.body)["n"] for p in posts] == [0, 0, 0, *range(1, 20)]
    first_ids = {p.headers.get("webhook-id") for p in posts[:3]}
    assert len(first_ids) == 1  # (absent without hub.signature=standard)


async def test_standard_webhooks_headers_on_request(hub: Hub) -> None:
    r = room()
    path = f"/standard/{r}"
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    hub.receiver.behaviour(path).statuses = [500]
    await hub.subscribe(f"/t/{r}", path, **{"hub.secret": secret, "hub.signature": "standard"})
    await hub.verified(path)
    await hub.publish(r, {"n": 1})
    first, second = await hub.posts(path, 2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]  # same id on retry
    headers = second.headers
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + second.body
    key = b"0123456789abcdef0123456789abcdef"
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
    hub_sig = hmac.new(secret.encode(), second.body, hashlib.sha256).hexdigest()
    assert headers["x-hub-signature"] == f"sha256={hub_sig}"


async def test_failed_deliveries_become_dead_letters_and_replay(hub: Hub) -> None:
    r = room()
    path = f"/dead/{r}"
    behaviour = hub.receiver.behaviour(path)
    behaviour.default = 500
    await hub.subscribe(f"/t/{r}", path, **{"hub.signature": "standard"})
    await hub.verified(path)
    before = await metrics_text(hub.base_url)
    await hub.publish(r, {"n": "doomed"})
    posts = await hub.posts(path, 3)  # websub.retry.max_attempts: 3

    async def listed() -> list[dict[str, object]] | None:
        response = await hub.admin("GET", "/deadletters", params={"api": "Hooks"})
        mine = [d for d in response.json() if d["topic"] == f"/t/{r}"]
        return mine or None

    (letter,) = await eventually(listed, what="dead letter")
    assert letter["id"] == posts[0].headers["webhook-id"]
    assert letter["attempts"] == 3 and "500" in str(letter["last_error"])
    assert json.loads(str(letter["payload"])) == {"n": "doomed"}
    after = await metrics_text(hub.base_url)
    labels = {"api": "Hooks", "version": "1.0.0"}
    retries = "streambridge_webhook_retries_total"
    dead = "streambridge_webhook_dead_letters_total"
    assert metric(after, retries, **labels) - metric(before, retries, **labels) >= 2
    assert metric(after, dead, **labels) - metric(before, dead, **labels) >= 1
    await quiet()
    assert len(hub.receiver.posts_to(path)) == 3

    behaviour.default = 204
    response = await hub.admin("POST", f"/deadletters/{letter['id']}/replay")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "pending"
    posts = await hub.posts(path, 4)
    assert posts[3].headers["webhook-id"] == letter["id"]
    assert json.loads(posts[3].body) == {"n": "doomed"}

    async def cleared() -> bool:
        response = await hub.admin("GET", "/deadletters")
        return all(d["id"] != letter["id"] for d in response.json())

    await eventually(cleared, what="dead letter gone after replay")
    assert_problem(await hub.admin("POST", "/deadletters/msg_unknown/replay"), 404)


async def test_replay_all_requeues_every_dead_letter_of_an_api(hub: Hub) -> None:
    r = room()
    path = f"/deadall/{r}"
    behaviour = hub.receiver.behaviour(path)
    behaviour.default = 500
    await hub.subscribe(f"/t/{r}", path)
    await hub.verified(path)
    await hub.publish(r, {"n": 1})
    await hub.publish(r, {"n": 2})
    await hub.posts(path, 6)

    async def two_dead() -> bool:
        response = await hub.admin("GET", "/deadletters")
        return len([d for d in response.json() if d["topic"] == f"/t/{r}"]) == 2

    await eventually(two_dead, what="two dead letters")
    behaviour.default = 204
    response = await hub.admin("POST", "/deadletters/replay", params={"api": "Hooks"})
    assert response.status_code == 200
    assert len(response.json()["replayed"]) >= 2
    posts = await hub.posts(path, 8)
    assert [json.loads(p.body)["n"] for p in posts[6:]] == [1, 2]


async def test_410_gone_ends_the_subscription(hub: Hub) -> None:
    r = room()
    path = f"/gone/{r}"
    hub.receiver.behaviour(path).default = 410
    await hub.subscribe(f"/t/{r}", path)
    await hub.verified(path)
    await hub.publish(r, {"n": 1})
    await hub.posts(path, 1)

    async def ended() -> bool:
        return not [s for s in await hub.subscriptions() if s["topic"] == f"/t/{r}"]

    await eventually(ended, what="subscription ended by 410")
    await hub.publish(r, {"n": 2})
    await quiet()
    assert len(hub.receiver.posts_to(path)) == 1


async def test_management_lists_and_ends_subscriptions_without_secrets(hub: Hub) -> None:
    r = room()
    path = f"/admin/{r}"
    await hub.subscribe(f"/t/{r}", path, **{"hub.secret": "never-shown-secret"})
    await hub.verified(path)
    (mine,) = [s for s in await hub.subscriptions() if s["topic"] == f"/t/{r}"]
    assert mine["has_secret"] is True and "never-shown-secret" not in json.dumps(mine)
    assert mine["application"] == "hooks"
    response = await hub.admin("DELETE", f"/subscriptions/{mine['id']}")
    assert response.status_code == 204
    await hub.publish(r, {"n": 1})
    await quiet()
    assert hub.receiver.posts_to(path) == []
    unauthorised = await hub.client.get("/api/v1/webhooks/deadletters")
    assert_problem(unauthorised, 401)


# --- inbound webhooks -----------------------------------------------------------------------


async def test_inbound_webhook_with_a_github_style_signature(hub: Hub) -> None:
    r = room()
    path = f"/inbound/{r}"
    await hub.subscribe(f"/t/{r}", path)
    await hub.verified(path)
    body = json.dumps({"action": "opened", "number": 7}).encode()
    signature = "sha256=" + hmac.new(INBOUND_SECRET.encode(), body, hashlib.sha256).hexdigest()
    async with httpx.AsyncClient(base_url=hub.base_url) as client:
        response = await client.post(
            f"{BASE}/in/{r}",
            content=body,
            headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
        )
        assert response.status_code == 202, response.text
        (post,) = await hub.posts(path, 1)
        assert json.loads(post.body) == {"action": "opened", "number": 7}

        wrong = "sha256=" + hmac.new(b"not-the-secret", body, hashlib.sha256).hexdigest()
        bad = await client.post(
            f"{BASE}/in/{r}", content=body, headers={"X-Hub-Signature-256": wrong}
        )
        assert_problem(bad, 401)
        # a topic without webhook_secret takes no signature instead of a token
        unsigned = await client.post(
            f"{BASE}/intext/{r}", content=body, headers={"X-Hub-Signature-256": signature}
        )
        assert_problem(unsigned, 401)
    await quiet()
    assert len(hub.receiver.posts_to(path)) == 1


async def test_inbound_webhook_with_a_bearer_token_needs_the_topic_scopes(hub: Hub) -> None:
    r = room()
    reader = await fetch_token(hub.base_url, "hooks", HOOKS_SECRET, "hooks:read")
    async with httpx.AsyncClient(base_url=hub.base_url) as client:
        response = await client.post(
            f"{BASE}/in/{r}", json={"x": 1}, headers={"Authorization": f"Bearer {reader}"}
        )
        body = assert_problem(response, 403)
        assert body["code"] == "insufficient_scope"
        assert_problem(await client.post(f"{BASE}/in/{r}", json={"x": 1}), 401)
        subscribe_only = await client.post(
            f"{BASE}/t/{r}", json={"x": 1}, headers={"Authorization": f"Bearer {hub.token}"}
        )
        assert_problem(subscribe_only, 405)
    before = await metrics_text(hub.base_url)
    await hub.publish(r, {"x": 2})
    after = await metrics_text(hub.base_url)
    name = "streambridge_events_published_total"
    labels = {"api": "Hooks", "version": "1.0.0", "topic": "/in/{room}"}
    assert metric(after, name, **labels) == metric(before, name, **labels) + 1


async def test_the_management_api_masks_webhook_secrets(hub: Hub) -> None:
    response = await hub.client.get(
        "/api/v1/apis/Hooks/1.0.0", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert response.status_code == 200
    inbound = next(t for t in response.json()["topics"] if t["name"] == "/in/{room}")
    assert inbound["webhook_secret"] == "**********"
    assert INBOUND_SECRET not in response.text


async def test_a_blocked_application_subscription_ends_websub_with_a_denial(hub: Hub) -> None:
    """The application's access is blocked through the management API: delivery stops and
    the subscriber is told (hub.mode=denied)."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    name = f"revoked-{room()}"
    created = await hub.client.post("/api/v1/applications", json={"name": name}, headers=admin)
    assert created.status_code == 201, created.text
    client_id, secret = created.json()["client_id"], created.json()["client_secret"]
    access = await hub.client.post(
        "/api/v1/subscriptions",
        json={"application": client_id, "api": "Hooks", "version": "1.0.0", "tier": "Unlimited"},
        headers=admin,
    )
    assert access.status_code == 201, access.text
    token = await fetch_token(hub.base_url, client_id, secret)
    own = Hub(hub.base_url, token, hub.receiver)
    try:
        r = room()
        path = f"/revoked/{r}"
        await own.subscribe(f"/t/{r}", path)
        await own.verified(path)
        blocked = await hub.client.post(
            f"/api/v1/subscriptions/{access.json()['id']}/block", headers=admin
        )
        assert blocked.status_code == 200

        async def denied() -> list[object] | None:
            return hub.receiver.gets_to(path, "denied") or None  # type: ignore[return-value]

        (denial,) = await eventually(denied, what="denial after revocation")
        assert "blocked" in denial.query["hub.reason"]  # type: ignore[attr-defined]
        assert not [s for s in await hub.subscriptions() if s["topic"] == f"/t/{r}"]
        await hub.publish(r, {"n": 1})
        await quiet()
        assert hub.receiver.posts_to(path) == []
    finally:
        await own.aclose()

"""The WebSub hub end to end (CONTRACT §7, issue 5 part 1): the checks of the
websub.rocks hub tests 100-106, bad requests, discovery, denial and leases.

A real gateway process, a real receiver on loopback (``websub.allow_private_callbacks``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

from tests.e2e.helpers import assert_problem, eventually, fetch_token, room, ws_refusal
from tests.e2e.receiver import Receiver
from tests.e2e.servers import Server, running_server
from tests.e2e.websub_setup import (
    BASE,
    HOOKS_SECRET,
    LIMITED_SECRET,
    OUTSIDER_SECRET,
    Hub,
    quiet,
    websub_config,
)

PUBLIC = "http://gateway.test:8080"


def topic_url(name: str) -> str:
    return f"{PUBLIC}{BASE}{name}"


# --- websub.rocks hub tests 100-106 -----------------------------------------------------


async def test_100_typical_subscriber_request(hub: Hub) -> None:
    """Discovery, 202, verification of intent with every parameter, then content."""
    r = room()
    discovered = await hub.client.get(
        f"{BASE}/t/{r}", headers={"Authorization": f"Bearer {hub.token}"}
    )
    assert discovered.status_code == 200
    links = discovered.headers["link"]
    assert f'<{PUBLIC}{BASE}/hub>; rel="hub"' in links
    assert f'<{topic_url(f"/t/{r}")}>; rel="self"' in links

    response = await hub.subscribe(topic_url(f"/t/{r}"), f"/100/{r}")
    assert response.status_code == 202
    check = await hub.verified(f"/100/{r}")
    assert check.query["hub.mode"] == "subscribe"
    assert check.query["hub.topic"] == topic_url(f"/t/{r}")
    assert int(check.query["hub.lease_seconds"]) > 0
    assert len(check.query["hub.challenge"]) >= 16

    await hub.publish(r, {"n": 1})
    (post,) = await hub.posts(f"/100/{r}", 1)
    assert json.loads(post.body) == {"n": 1}
    assert post.headers["content-type"] == "application/json"
    assert (
        'rel="hub"' in post.headers["link"]
        and f'<{topic_url(f"/t/{r}")}>; rel="self"' in post.headers["link"]
    )
    assert "x-hub-signature" not in post.headers
    await quiet()
    assert len(hub.receiver.gets_to(f"/100/{r}")) == 1  # one verification, one delivery
    assert len(hub.receiver.posts_to(f"/100/{r}")) == 1


async def test_101_subscriber_includes_a_secret(hub: Hub) -> None:
    r = room()
    secret = "a-subscriber-secret-101"
    await hub.subscribe(f"/t/{r}", f"/101/{r}", **{"hub.secret": secret})
    await hub.verified(f"/101/{r}")
    await hub.publish(r, {"n": 101})
    (post,) = await hub.posts(f"/101/{r}", 1)
    expected = hmac.new(secret.encode(), post.body, hashlib.sha256).hexdigest()
    assert post.headers["x-hub-signature"] == f"sha256={expected}"


async def test_102_additional_parameters_are_ignored_and_the_callback_query_kept(
    hub: Hub,
) -> None:
    r = room()
    callback = hub.receiver.url(f"/102/{r}") + "?subscriber=abc&x=1"
    form = {
        "hub.mode": "subscribe",
        "hub.topic": f"/t/{r}",
        "hub.callback": callback,
        "hub.unknown": "whatever",
        "foo": "bar",
    }
    response = await hub.request(form)
    assert response.status_code == 202, response.text
    check = await hub.verified(f"/102/{r}")
    assert check.query["subscriber"] == "abc" and check.query["x"] == "1"
    assert "hub.unknown" not in check.query and "foo" not in check.query
    await hub.publish(r, {"n": 102})
    (post,) = await hub.posts(f"/102/{r}", 1)
    assert post.query == {"subscriber": "abc", "x": "1"}


async def test_103_resubscription_before_expiry_updates_the_one_record(hub: Hub) -> None:
    r = room()
    await hub.subscribe(f"/t/{r}", f"/103/{r}", **{"hub.lease_seconds": "100"})
    await hub.verified(f"/103/{r}")
    await hub.subscribe(f"/t/{r}", f"/103/{r}", **{"hub.lease_seconds": "200"})
    second = await hub.verified(f"/103/{r}", count=2)
    assert second.query["hub.lease_seconds"] == "200"

    async def renewed() -> list[dict[str, object]] | None:
        mine = [s for s in await hub.subscriptions() if s["topic"] == f"/t/{r}"]
        return mine if mine and mine[0]["lease_seconds"] == 200 else None

    mine = await eventually(renewed, what="lease renewed")
    assert len(mine) == 1
    await hub.publish(r, {"n": 103})
    await hub.posts(f"/103/{r}", 1)
    await quiet()
    assert len(hub.receiver.posts_to(f"/103/{r}")) == 1  # one record, one delivery


async def test_104_unsubscribe_is_verified_and_stops_delivery(hub: Hub) -> None:
    r = room()
    await hub.subscribe(f"/t/{r}", f"/104/{r}")
    await hub.verified(f"/104/{r}")
    form = {
        "hub.mode": "unsubscribe",
        "hub.topic": f"/t/{r}",
        "hub.callback": hub.receiver.url(f"/104/{r}"),
    }
    response = await hub.request(form)
    assert response.status_code == 202
    check = await hub.verified(f"/104/{r}", mode="unsubscribe")
    assert check.query["hub.topic"] == topic_url(f"/t/{r}")
    assert "hub.lease_seconds" not in check.query
    await hub.publish(r, {"n": 104})
    await quiet()
    assert hub.receiver.posts_to(f"/104/{r}") == []


async def test_105_plaintext_content_delivery(hub: Hub) -> None:
    r = room()
    await hub.subscribe(f"/text/{r}", f"/105/{r}")
    await hub.verified(f"/105/{r}")
    await hub.publish(r, "Hello, plain text world", topic="intext")
    (post,) = await hub.posts(f"/105/{r}", 1)
    assert post.body == b"Hello, plain text world"
    assert post.headers["content-type"] == "text/plain"


async def test_106_json_content_delivery(hub: Hub) -> None:
    r = room()
    await hub.subscribe(f"/t/{r}", f"/106/{r}")
    await hub.verified(f"/106/{r}")
    document = {"name": "websub", "items": [1, 2, 3], "nested": {"ok": True}}
    await hub.publish(r, document)
    (post,) = await hub.posts(f"/106/{r}", 1)
    assert post.headers["content-type"] == "application/json"
    assert json.loads(post.body) == document


# --- verification failures, denial, leases -------------------------------------------------


async def test_a_callback_that_does_not_echo_the_challenge_is_not_subscribed(hub: Hub) -> None:
    r = room()
    for verify in ("wrong", "404"):
        path = f"/noecho-{verify}/{r}"
        hub.receiver.behaviour(path).verify = verify
        await hub.subscribe(f"/t/{r}", path)

        async def asked(path: str = path) -> bool:
            return bool(hub.receiver.gets_to(path, "subscribe"))

        await eventually(asked, what="verification request")
    await quiet()
    assert not [s for s in await hub.subscriptions() if s["topic"] == f"/t/{r}"]
    await hub.publish(r, {"n": 0})
    await quiet()
    assert not hub.receiver.posts_to(f"/noecho-wrong/{r}")


async def test_policy_refusal_after_acceptance_is_a_denial(
    websub_server: Server, receiver: Receiver
) -> None:
    """The tier allows one subscription: the second is accepted (202), then denied."""
    token = await fetch_token(websub_server.base_url, "limited", LIMITED_SECRET)
    hub = Hub(websub_server.base_url, token, receiver)
    try:
        r = room()
        await hub.subscribe(f"/t/{r}", f"/limited-a/{r}")
        await hub.verified(f"/limited-a/{r}")
        await hub.subscribe(f"/t/{r}", f"/limited-b/{r}")

        async def denied() -> list[object] | None:
            return receiver.gets_to(f"/limited-b/{r}", "denied") or None  # type: ignore[return-value]

        (denial,) = await eventually(denied, what="denial")
        assert denial.query["hub.topic"] == topic_url(f"/t/{r}")  # type: ignore[attr-defined]
        assert "allows 1" in denial.query["hub.reason"]  # type: ignore[attr-defined]
        assert not receiver.gets_to(f"/limited-b/{r}", "subscribe")
    finally:
        await hub.aclose()


async def test_an_expired_lease_stops_delivery(hub: Hub) -> None:
    r = room()
    await hub.subscribe(f"/t/{r}", f"/lease/{r}", **{"hub.lease_seconds": "1"})
    check = await hub.verified(f"/lease/{r}")
    assert check.query["hub.lease_seconds"] == "1"

    async def gone() -> bool:
        return not [s for s in await hub.subscriptions() if s["topic"] == f"/t/{r}"]

    await eventually(gone, timeout=5, what="lease expiry")
    await hub.publish(r, {"n": 1})
    await quiet()
    assert hub.receiver.posts_to(f"/lease/{r}") == []


async def test_lease_is_clamped_to_the_bounds_and_defaults(hub: Hub) -> None:
    r = room()
    await hub.subscribe(f"/t/{r}", f"/clamp/{r}", **{"hub.lease_seconds": "999999999"})
    check = await hub.verified(f"/clamp/{r}")
    assert check.query["hub.lease_seconds"] == str(2_592_000)
    await hub.subscribe(f"/t/{r}", f"/default/{r}")
    check = await hub.verified(f"/default/{r}")
    assert check.query["hub.lease_seconds"] == str(864_000)


# --- bad requests and access checks ------------------------------------------------------


async def test_bad_requests_get_400_with_a_reason(hub: Hub) -> None:
    cb = hub.receiver.url("/bad")
    good = {"hub.mode": "subscribe", "hub.topic": "/t/x", "hub.callback": cb}
    cases = [
        ({**good, "hub.mode": "subscribed"}, "hub.mode"),
        ({k: v for k, v in good.items() if k != "hub.topic"}, "hub.topic"),
        ({k: v for k, v in good.items() if k != "hub.callback"}, "hub.callback"),
        ({**good, "hub.callback": "ftp://example.com/x"}, "http"),
        ({**good, "hub.callback": "not a url"}, "hub.callback"),
        ({**good, "hub.secret": "s" * 200}, "200 bytes"),
        ({**good, "hub.lease_seconds": "-5"}, "lease"),
        ({**good, "hub.lease_seconds": "soon"}, "lease"),
        ({**good, "hub.topic": "http://elsewhere.example/feed"}, "topic"),
        ({**good, "hub.signature": "md5"}, "signature"),
    ]
    for form, word in cases:
        body = assert_problem(await hub.request(form), 400)
        assert word in body["detail"], (form, body)


async def test_hub_access_checks_follow_contract_section_4(hub: Hub, websub_server: Server) -> None:
    cb = hub.receiver.url("/access")
    form = {"hub.mode": "subscribe", "hub.topic": "/t/x", "hub.callback": cb}
    response = await hub.request(form, token=None)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert_problem(await hub.request({**form, "hub.mode": "bogus"}, token=None), 401)
    assert_problem(await hub.request({**form, "hub.topic": "/nope"}), 404)
    outsider = await fetch_token(websub_server.base_url, "outsider", OUTSIDER_SECRET)
    assert_problem(await hub.request(form, token=outsider), 403)
    reader = await fetch_token(websub_server.base_url, "hooks", "hooks-secret-0001", "hooks:write")
    body = assert_problem(await hub.request(form, token=reader), 403)
    assert body["code"] == "insufficient_scope"
    body = assert_problem(await hub.request({**form, "hub.topic": "/in/x"}), 400)
    assert "publish-only" in body["detail"]


async def test_query_parameters_work_like_the_form(hub: Hub) -> None:
    r = room()
    params = {
        "hub.mode": "subscribe",
        "hub.topic": f"/t/{r}",
        "hub.callback": hub.receiver.url(f"/q/{r}"),
    }
    response = await hub.client.post(
        f"{BASE}/hub", params=params, headers={"Authorization": f"Bearer {hub.token}"}
    )
    assert response.status_code == 202, response.text
    await hub.verified(f"/q/{r}")


async def test_hub_and_topics_refuse_other_methods(hub: Hub) -> None:
    auth = {"Authorization": f"Bearer {hub.token}"}
    assert_problem(await hub.client.get(f"{BASE}/hub", headers=auth), 405)
    assert_problem(await hub.client.put(f"{BASE}/t/x", headers=auth), 405)


async def test_a_websocket_upgrade_on_a_websub_api_is_refused_with_426(
    hub: Hub, websub_server: Server
) -> None:
    response = await ws_refusal(websub_server.ws_url, f"{BASE}/t/x", hub.token)
    assert response.status_code == 426


async def test_the_token_may_come_as_access_token_in_the_query(hub: Hub) -> None:
    r = room()
    form = {
        "hub.mode": "subscribe",
        "hub.topic": f"/t/{r}",
        "hub.callback": hub.receiver.url(f"/qt/{r}"),
    }
    response = await hub.client.post(f"{BASE}/hub", data=form, params={"access_token": hub.token})
    assert response.status_code == 202, response.text
    await hub.verified(f"/qt/{r}")


async def test_private_callbacks_are_refused_by_default(tmp_path: Path, receiver: Receiver) -> None:
    """Without ``websub.allow_private_callbacks`` a loopback or private callback gets 400
    and no request is ever sent to it."""
    config = websub_config(tmp_path, allow_private_callbacks=False)
    with running_server(tmp_path, config) as server:
        token = await fetch_token(server.base_url, "hooks", HOOKS_SECRET)
        strict = Hub(server.base_url, token, receiver)
        try:
            r = room()
            for callback in (
                receiver.url(f"/ssrf/{r}"),
                f"http://localhost:{receiver.port}/ssrf/{r}",
                f"http://[::ffff:127.0.0.1]:{receiver.port}/ssrf/{r}",
                "http://169.254.169.254/latest/meta-data/",
                "http://10.0.0.1/hook",
            ):
                form = {"hub.mode": "subscribe", "hub.topic": f"/t/{r}", "hub.callback": callback}
                body = assert_problem(await strict.request(form), 400)
                assert "public addresses" in body["detail"], body
            await quiet()
            assert receiver.gets_to(f"/ssrf/{r}") == []
        finally:
            await strict.aclose()

"""WebSub under hostile load (CONTRACT §4c, issue 12 D4, R2): a tier's limit holds under
concurrent subscribes (a slot is claimed in the store before verification), an
application has at most 10 verifications in flight (429 above), and a verification that
times out is logged with its reason.

A gateway of its own, the e2e webhook receiver, and a tarpit callback that accepts
connections and never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.e2e.helpers import eventually, fetch_token
from tests.e2e.receiver import Receiver
from tests.e2e.servers import Server, running_server
from tests.e2e.websub_setup import HOOKS_SECRET, LIMITED_SECRET, Hub, quiet, websub_config


@pytest.fixture(scope="module")
def bounded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("websub-bounds")
    # 5 s: the twelve subscribes must all be made while the first ten still wait (at the
    # suite's worst load twelve took over 2 s, and the first slots were free again).
    with running_server(directory, websub_config(directory, timeout="5s")) as running:
        yield running


@contextlib.asynccontextmanager
async def tarpit() -> AsyncIterator[int]:
    """A callback server that accepts and never answers; yields its port."""
    held: set[asyncio.StreamWriter] = set()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.add(writer)
        try:
            with contextlib.suppress(ConnectionError):
                await reader.read()  # until the gateway gives up and closes
        finally:
            held.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        for writer in list(held):
            writer.close()
        server.close()
        await server.wait_closed()


async def test_concurrent_subscribes_never_pass_the_tier(
    bounded_server: Server, receiver: Receiver
) -> None:
    token = await fetch_token(bounded_server.base_url, "limited", LIMITED_SECRET)
    hub = Hub(bounded_server.base_url, token, receiver)  # tier One: 1 subscription
    try:
        topic = f"{bounded_server.config['gateway']['public_url']}/hooks/1.0.0/t/race"
        answers = await asyncio.gather(
            *(
                hub.request(
                    {
                        "hub.mode": "subscribe",
                        "hub.topic": topic,
                        "hub.callback": receiver.url(f"/race/{i}"),
                    }
                )
                for i in range(20)
            )
        )
        # Past 10 pending verifications the hub answers 429 (the other test).
        accepted = [i for i, a in enumerate(answers) if a.status_code == 202]
        assert len(accepted) >= 10
        assert all(a.status_code in (202, 429) for a in answers), [a.text for a in answers]

        async def settled() -> bool:  # each got its verification or its denial
            return all(receiver.gets_to(f"/race/{i}") for i in accepted)

        await eventually(settled, 10, "every request verified or denied")
        await quiet(0.5)
        mine = [s for s in await hub.subscriptions() if "/race/" in s["callback"]]
        assert len(mine) == 1, mine
        await hub.publish("race", {"n": 1})
        await quiet(1.0)
        posts = sum(len(receiver.posts_to(f"/race/{i}")) for i in range(20))
        assert posts == 1
    finally:
        await hub.aclose()


async def test_pending_verifications_are_capped_and_timeouts_logged(
    bounded_server: Server, receiver: Receiver
) -> None:
    token = await fetch_token(bounded_server.base_url, "hooks", HOOKS_SECRET)
    hub = Hub(bounded_server.base_url, token, receiver)
    topic = f"{bounded_server.config['gateway']['public_url']}/hooks/1.0.0/t/tarpit"
    try:
        async with tarpit() as port:

            async def subscribe(i: int) -> int:
                form = {
                    "hub.mode": "subscribe",
                    "hub.topic": topic,
                    "hub.callback": f"http://127.0.0.1:{port}/tarpit/{i}",
                }
                response = await hub.request(form)
                if response.status_code == 429:
                    assert int(response.headers["Retry-After"]) >= 1
                return response.status_code

            statuses = [await subscribe(i) for i in range(12)]
            assert statuses == [202] * 10 + [429] * 2

            async def logged() -> bool:
                return bounded_server.stderr().count(f"127.0.0.1:{port}/tarpit/") >= 10

            await eventually(logged, 15, "the timeouts logged")
            lines = [
                line for line in bounded_server.stderr().splitlines() if f"{port}/tarpit/" in line
            ]
            assert all(
                "websub verification failed" in line and 'reason="no answer within 5s"' in line
                for line in lines
            ), lines
            assert await subscribe(99) == 202  # the slots are free again
    finally:
        await hub.aclose()

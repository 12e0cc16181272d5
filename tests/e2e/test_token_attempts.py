"""The token endpoint limits failed attempts (CONTRACT §4c, issue 12 R4): per client id,
and per source address for ids nobody has; past the limit 429 with Retry-After, and a
correct secret of another client is not slowed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.helpers import token_response
from tests.e2e.servers import Server, running_server, state_url

LIMIT = 5


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("token-attempts")
    config = {
        "gateway": {
            "state": state_url(directory),
            "limits": {"token_attempts_per_minute": LIMIT},
        },
        "brokers": {"mem": {"type": "memory"}},
        "applications": [
            {"name": name, "client_id": name, "client_secret": f"{name}-secret-0001"}
            for name in ("guessed", "other")
        ],
    }
    with running_server(directory, config) as server:
        yield server


async def test_guessing_one_client_is_limited_and_others_are_not_slowed(limited: Server) -> None:
    base = limited.base_url
    baseline = await _other_token_seconds(base)
    for _ in range(LIMIT):
        assert (await token_response(base, "guessed", "wrong")).status_code == 401
    refused = await token_response(base, "guessed", "wrong")
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # The right secret waits too while the client id is locked out.
    assert (await token_response(base, "guessed", "guessed-secret-0001")).status_code == 429
    # Measured against the same request before the guessing, not a fixed figure: the
    # suite's load alone took one such request past a second.
    assert await _other_token_seconds(base) < 2 * baseline + 0.5


async def _other_token_seconds(base: str) -> float:
    """How long the best of three token requests of a client nobody guesses takes."""
    times = []
    for _ in range(3):
        started = time.monotonic()
        assert (await token_response(base, "other", "other-secret-0001")).status_code == 200
        times.append(time.monotonic() - started)
    return min(times)


async def test_unknown_client_ids_are_limited_per_address(limited: Server) -> None:
    base = limited.base_url
    for _ in range(LIMIT):
        unknown = f"nobody-{uuid.uuid4().hex[:8]}"
        assert (await token_response(base, unknown, "wrong")).status_code == 401
    assert (await token_response(base, "nobody-else", "wrong")).status_code == 429
    assert (await token_response(base, "other", "other-secret-0001")).status_code == 200

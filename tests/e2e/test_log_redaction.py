"""Access tokens never appear in logs, however the query string is encoded (CONTRACT §4c,
issue 12 D7): ``?access%5Ftoken=`` is a token to the gateway, so it is to the redaction,
in every logger, uvicorn's access log (``STREAMBRIDGE_ACCESS_LOG=1``) and its WebSocket
lines included.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.helpers import eventually, fetch_token, get, ws_connect
from tests.e2e.servers import MAIN_SECRET, Server, main_config, running_server


@pytest.fixture(scope="module")
def logging_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("redaction")
    with running_server(
        directory, main_config(directory), env={"STREAMBRIDGE_ACCESS_LOG": "1"}
    ) as server:
        yield server


@pytest.mark.parametrize(
    "name", ["access_token", "access%5Ftoken", "%61ccess_token", "access%5ftoken"]
)
async def test_a_token_in_the_query_is_redacted_whatever_its_encoding(
    logging_server: Server, name: str
) -> None:
    token = await fetch_token(logging_server.base_url, "main", MAIN_SECRET)
    signature = token.rsplit(".", 1)[1]
    sse = await get(logging_server.base_url, f"/events/1.0.0/t/redact?{name}={token}")
    assert sse.status_code == 200  # the gateway took it as the token
    async with ws_connect(logging_server.ws_url, f"/feed/1.0.0/watch/redact?{name}={token}"):
        pass

    async def logged() -> bool:
        return f"{name}=[redacted]" in logging_server.stderr()

    await eventually(logged, 5, "the request lines logged")
    stderr = logging_server.stderr()
    assert signature not in stderr
    assert "WebSocket" in stderr  # uvicorn's own lines went through the redaction too

"""The HTTP protocol sets up a connection as uvicorn's does, with what is the same for
every connection of a server looked up once: a new uvicorn that sets something more per
connection fails here, not in production."""

from __future__ import annotations

from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from bridge.config import Limits
from gateway.edge import bounded_protocol

PER_CONNECTION = {"parser", "pipeline", "scheme"}  # new objects each, or set later by uvicorn


async def _app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not called")


async def test_a_connection_is_set_up_as_uvicorns_is() -> None:
    config = uvicorn.Config(_app, log_config=None, root_path="/gw", limit_concurrency=50)
    config.load()
    state, app_state = ServerState(), {"k": "v"}
    theirs = HttpToolsProtocol(config=config, server_state=state, app_state=app_state)
    ours = bounded_protocol(Limits())(config=config, server_state=state, app_state=app_state)
    for name, value in vars(theirs).items():
        assert hasattr(ours, name), f"uvicorn sets {name} per connection; we do not"
        if name not in PER_CONNECTION:
            assert getattr(ours, name) == value, name
    assert ours.scheme == "http"
    assert ours.parser is not theirs.parser
    again = bounded_protocol(Limits())(config=config, server_state=state, app_state=app_state)
    assert again.parser is not ours.parser and again.pipeline is not ours.pipeline

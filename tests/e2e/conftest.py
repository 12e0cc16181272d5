"""End-to-end fixtures: the shared gateway process, and its stderr in failure reports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.e2e.helpers import fetch_token
from tests.e2e.receiver import Receiver, running_receiver
from tests.e2e.servers import MAIN_SECRET, STARTED, Server, main_config, running_server, slow_config
from tests.e2e.websub_setup import Hub, hub_for, websub_config


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("main-server")
    with running_server(directory, main_config(directory)) as running:
        yield running


@pytest.fixture
async def token(server: Server) -> str:
    """A token of the main application, which is subscribed to every API of ``server``."""
    return await fetch_token(server.base_url, "main", MAIN_SECRET)


@pytest.fixture(scope="session")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("slow-server")
    with running_server(directory, slow_config(directory)) as running:
        yield running


# --- failure reports carry the server's stderr ------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if call.when == "setup":
        item.stash[_FIRST_SERVER] = len(STARTED)
    if not report.failed:
        return
    used = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, Server)]
    used += STARTED[item.stash.get(_FIRST_SERVER, len(STARTED)) :]
    for server in dict.fromkeys(used):
        report.sections.append((f"server :{server.port} stderr", server.stderr()[-20_000:]))


_FIRST_SERVER = pytest.StashKey[int]()


# --- WebSub: one gateway with a websub API, and a webhook receiver ----------------------


@pytest.fixture(scope="session")
def websub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("websub-server")
    with running_server(directory, websub_config(directory)) as running:
        yield running


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture
async def hub(websub_server: Server, receiver: Receiver) -> AsyncIterator[Hub]:
    async with hub_for(websub_server, receiver) as client:
        yield client

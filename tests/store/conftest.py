"""One store suite, bound to both backends: SQLite in a temporary file and the real
PostgreSQL that scripts/services.sh runs on loopback.

PostgreSQL tests get a database of their own module (``sb_<uuid>``, dropped after it),
emptied before each test: creating a database costs ~0.3 s, emptying one ~20 ms. Tests
of the migrations themselves get a new, empty database each (``empty_store_url``).
An unreachable PostgreSQL fails the tests that need it (STYLE: nothing silently skips).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bridge.store import Store
from tests.store.helpers import empty_tables, postgres_database

BACKENDS = ["sqlite", "postgresql"]


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/state/streambridge.db"


@pytest.fixture(scope="module")
def module_postgres_database() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of a database of each backend, with no objects in it (schema maybe)."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    url: str = request.getfixturevalue("module_postgres_database")
    asyncio.run(empty_tables(url))
    return url


@pytest.fixture(params=BACKENDS)
def empty_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a new database of each backend, without even a schema."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    async with Store.from_url(store_url) as opened:
        yield opened

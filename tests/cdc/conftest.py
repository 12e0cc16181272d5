"""CDC fixtures: a private database per test on the PostgreSQL of scripts/services.sh
(wal_level=logical, wal2json). An unreachable server fails the test (nothing skips)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.cdc.helpers import cdc_database


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    async with cdc_database() as url:
        yield url

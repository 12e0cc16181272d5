"""CEL limits at load (CONTRACT §4c, issue 12 D8): length, nesting depth and comprehension
nesting are checked before compiling, so an expression that would make the CEL binding
panic is a config error naming its field: ``streambridge check`` exits 2, the management
API answers 422, and the gateway goes on serving.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import HTTP_TIMEOUT, assert_problem
from tests.e2e.servers import Server, running_server, state_url, write_config
from tests.e2e.test_cli import VALID, run_cli

FILTER = "apis[0].topics[0].pipeline[0].filter: "
ADMIN = "admin-token-for-cel-limits-0123"
DEEP = "(" * 100_000 + "data.amount" + ")" * 100_000


def with_filter(expression: str, **limits: Any) -> dict[str, Any]:
    config = copy.deepcopy(VALID)
    config["apis"][0]["topics"][0]["pipeline"][0]["filter"] = expression
    if limits:
        config["gateway"]["limits"] = limits
    return config


def check(tmp_path: Path, config: dict[str, Any]) -> tuple[int, str]:
    result = run_cli("check", "--config", str(write_config(tmp_path, config)))
    return result.returncode, result.stderr


@pytest.mark.parametrize(
    ("expression", "limits", "why"),
    [
        (DEEP, {}, "longer than 4096"),
        ("(" * 40 + "data.amount" + ")" * 40 + " > 1", {}, "nested deeper than 32"),
        ("[[[[data.amount]]]] != []", {"cel_max_depth": 3}, "nested deeper than 3"),
        ("data.amount > 100", {"cel_max_length": 16}, "longer than 16"),
        (
            "data.a.all(x, x.all(y, y.exists(z, z > 1)))",
            {},
            "more than 2 comprehensions",
        ),
    ],
    ids=["100000-deep", "depth", "configured-depth", "configured-length", "comprehensions"],
)
def test_an_expression_past_the_limits_is_a_config_error_naming_the_field(
    tmp_path: Path, expression: str, limits: dict[str, Any], why: str
) -> None:
    code, stderr = check(tmp_path, with_filter(expression, **limits))
    assert code == 2, stderr[-2000:]
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr[-2000:]
    assert lines[0].startswith(FILTER) and why in lines[0], lines[0][:300]


def test_expressions_within_the_limits_load(tmp_path: Path) -> None:
    nested = "(" * 32 + "data.amount" + ")" * 32 + " > 1 && data.a.all(x, x.all(y, y > 1))"
    code, stderr = check(tmp_path, with_filter(nested))
    assert code == 0, stderr


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("cel-limits")
    config = {
        "gateway": {"state": state_url(directory), "admin_token": ADMIN},
        "brokers": {"mem": {"type": "memory"}},
    }
    with running_server(directory, config) as server:
        yield server


async def test_the_management_api_answers_422_naming_the_field(gateway: Server) -> None:
    api = {
        "name": "Deep",
        "version": "1",
        "context": "/deep",
        "broker": "mem",
        "topics": [{"name": "/t", "channel": "deep", "pipeline": [{"filter": DEEP[:4000]}]}],
    }
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        response = await client.post(
            f"{gateway.base_url}/api/v1/apis",
            json=api,
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        body = assert_problem(response, 422)
        assert any("topics[0].pipeline[0].filter" in str(error) for error in body["errors"]), body
        assert (await client.get(f"{gateway.base_url}/healthz")).status_code == 200

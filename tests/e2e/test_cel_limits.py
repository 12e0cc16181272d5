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


def nested(depth: int) -> str:
    return "(" * depth + "data.amount" + ")" * depth + " > 1"


async def test_the_management_api_checks_the_configured_limits(tmp_path: Path) -> None:
    """``gateway.limits`` looser than the defaults in one way (depth 40 > 32) and stricter
    in another (length 200 < 4096): the management API holds the configured ones, and an
    API it accepted loads again from the store at the next start."""
    config = {
        "gateway": {
            "state": state_url(tmp_path),
            "admin_token": ADMIN,
            "limits": {"cel_max_depth": 40, "cel_max_length": 200},
        },
        "brokers": {"mem": {"type": "memory"}},
    }

    def api(name: str, expression: str) -> dict[str, Any]:
        topic = {"name": "/t", "channel": name, "pipeline": [{"filter": expression}]}
        return {
            "name": name,
            "version": "1",
            "context": f"/{name}",
            "broker": "mem",
            "topics": [topic],
        }

    headers = {"Authorization": f"Bearer {ADMIN}"}
    deep, long = nested(36), " || ".join(["data.amount > 1"] * 14)
    assert len(deep) < 200 < len(long) < 4096
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, headers=headers) as client:
        with running_server(tmp_path, config) as server:
            created = await client.post(f"{server.base_url}/api/v1/apis", json=api("deep", deep))
            assert created.status_code == 201, created.text
            refused = await client.post(f"{server.base_url}/api/v1/apis", json=api("long", long))
            body = assert_problem(refused, 422)
            [error] = body["errors"]
            assert error["field"] == "body.topics[0].pipeline[0].filter", body
            assert error["message"].endswith("longer than 200 characters"), body
            replaced = await client.put(
                f"{server.base_url}/api/v1/apis/deep/1", json=api("deep", nested(38))
            )
            assert replaced.status_code == 200, replaced.text
        with running_server(tmp_path, config) as server:
            again = await client.get(f"{server.base_url}/api/v1/apis/deep/1")
            assert again.status_code == 200, again.text
            assert again.json()["topics"][0]["pipeline"][0]["filter"] == nested(38)

"""CONTRACT §1 command line: ``check``, ``serve`` with an invalid config, STREAMBRIDGE_CONFIG."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import HTTP_TIMEOUT, fetch_token, sse_stream
from tests.e2e.servers import ROOT, free_port, port_is_free, running_server, write_config

VALID: dict[str, Any] = {
    "gateway": {"state": "sqlite:///streambridge.db"},
    "brokers": {"mem": {"type": "memory"}},
    "tiers": {"Gold": {"events_per_minute": 600, "max_connections": 2}},
    "apis": [
        {
            "name": "Orders",
            "version": "1.0.0",
            "context": "/{version}/orders",
            "broker": "mem",
            "tiers": ["Gold"],
            "topics": [
                {
                    "name": "/created",
                    "channel": "orders.created",
                    "scopes": ["orders:read"],
                    "pipeline": [
                        {"filter": "data.amount > 100"},
                        {"map": "{'id': data.id}"},
                    ],
                },
                {
                    "name": "/stats",
                    "channel": "orders.created",
                    "pipeline": [{"window": {"tumbling": "10s", "aggregate": {"n": "count()"}}}],
                },
            ],
        },
        {
            "name": "Chat",
            "version": "2.0",
            "context": "/chat",
            "protocol": "websocket",
            "broker": "mem",
            "topics": [{"name": "/rooms/{room}", "mode": "both", "channel": "chat.{room}"}],
        },
    ],
    "applications": [
        {
            "name": "dash",
            "client_id": "dash",
            "client_secret": "dash-secret-01",
            "subscriptions": [{"api": "Orders", "version": "1.0.0", "tier": "Gold"}],
        }
    ],
}


def run_cli(*args: str, timeout: float = 30.0, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **env},
        check=False,
    )


def broken(change: Any) -> dict[str, Any]:
    config = copy.deepcopy(VALID)
    change(config)
    return config


def _bad_cel(c: dict[str, Any]) -> None:
    c["apis"][0]["topics"][0]["pipeline"][0]["filter"] = "data.amount >"


def _unknown_broker(c: dict[str, Any]) -> None:
    c["apis"][1]["broker"] = "kafka-nowhere"


def _unknown_tier(c: dict[str, Any]) -> None:
    c["apis"][0]["tiers"] = ["Gold", "Platinum"]


def _duplicate_context(c: dict[str, Any]) -> None:
    c["apis"][1]["context"] = "/{version}/orders"
    c["apis"][1]["version"] = "1.0.0"
    c["apis"][1]["name"] = "Orders2"


def _bad_duration(c: dict[str, Any]) -> None:
    c["apis"][0]["topics"][1]["pipeline"][0]["window"]["tumbling"] = "ten seconds"


def _unknown_key(c: dict[str, Any]) -> None:
    c["gateway"]["colour"] = "blue"


PROBLEMS = {
    "bad-cel": (_bad_cel, "apis[0].topics[0].pipeline[0].filter: "),
    "unknown-broker": (_unknown_broker, "apis[1].broker: "),
    "unknown-tier": (_unknown_tier, "apis[0].tiers[1]: "),
    "duplicate-context": (_duplicate_context, "apis[1].context: "),
    "bad-duration": (_bad_duration, "apis[0].topics[1].pipeline[0].window.tumbling: "),
    "unknown-key": (_unknown_key, "gateway.colour: "),
}


def test_check_valid_config_exits_0(tmp_path: Path) -> None:
    result = run_cli("check", "--config", str(write_config(tmp_path, VALID)))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(("change", "path"), PROBLEMS.values(), ids=PROBLEMS.keys())
def test_check_names_the_field_path(tmp_path: Path, change: Any, path: str) -> None:
    result = run_cli("check", "--config", str(write_config(tmp_path, broken(change))))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(path), result.stderr
    assert len(lines[0]) > len(path), "the line says what is wrong"


@pytest.mark.parametrize(
    ("changes", "paths"),
    [
        (
            [_bad_cel, _bad_duration, _unknown_key],
            [PROBLEMS[k][1] for k in ("bad-cel", "bad-duration", "unknown-key")],
        ),
        (
            [_unknown_broker, _unknown_tier, _duplicate_context],
            [PROBLEMS[k][1] for k in ("unknown-broker", "unknown-tier", "duplicate-context")],
        ),
    ],
    ids=["field-values", "references"],
)
def test_check_reports_one_line_per_problem(
    tmp_path: Path, changes: list[Any], paths: list[str]
) -> None:
    def apply(config: dict[str, Any]) -> None:
        for change in changes:
            change(config)

    result = run_cli("check", "--config", str(write_config(tmp_path, broken(apply))))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == len(paths), result.stderr
    for path in paths:
        assert sum(line.startswith(path) for line in lines) == 1, (path, result.stderr)


def _every_phase(c: dict[str, Any]) -> None:
    """An unknown key, an unknown broker, an unknown tier and a bad CEL expression: each
    used to hide the others' phase (issue 10, item 6)."""
    for change in (_unknown_key, _unknown_broker, _unknown_tier, _bad_cel):
        change(c)


EVERY_PHASE = [PROBLEMS[k][1] for k in ("unknown-key", "unknown-broker", "unknown-tier", "bad-cel")]


def test_check_and_serve_report_every_problem_in_one_run(tmp_path: Path) -> None:
    config = str(write_config(tmp_path, broken(_every_phase)))
    checked = run_cli("check", "--config", config)
    port = free_port()
    served = run_cli("serve", "--config", config, "--port", str(port))
    for result in (checked, served):
        assert result.returncode == 2, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == len(EVERY_PHASE), result.stderr
        for path in EVERY_PHASE:
            assert sum(line.startswith(path) for line in lines) == 1, (path, result.stderr)
    assert sorted(served.stderr.splitlines()) == sorted(checked.stderr.splitlines())
    assert port_is_free(port), "serve stops before it binds"


def test_serve_with_invalid_config_exits_2_without_listening(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, broken(_unknown_broker))
    result = run_cli("serve", "--config", str(config), "--port", str(port))
    assert result.returncode == 2
    assert "apis[1].broker: " in result.stderr
    assert "Uvicorn running" not in result.stderr
    assert "Started server process" not in result.stderr
    assert port_is_free(port)


def test_serve_with_invalid_config_from_environment_exits_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, broken(_bad_cel))
    result = run_cli("serve", "--port", str(free_port()), STREAMBRIDGE_CONFIG=str(config))
    assert result.returncode == 2
    assert "apis[0].topics[0].pipeline[0].filter: " in result.stderr


async def test_serve_reads_config_from_environment_with_json_logs(tmp_path: Path) -> None:
    config = copy.deepcopy(VALID)
    config["gateway"]["state"] = f"sqlite:///{tmp_path / 'state.db'}"
    config["brokers"] = {"env-broker": {"type": "memory"}}
    for api in config["apis"]:
        api["broker"] = "env-broker"
    with running_server(
        tmp_path, config, via_env=True, env={"STREAMBRIDGE_LOG_FORMAT": "json"}
    ) as server:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            ready = await client.get(f"{server.base_url}/readyz")
        assert ready.json()["checks"] == {"state": True, "broker:env-broker": True}
        token = await fetch_token(server.base_url, "dash", "dash-secret-01")
        async with sse_stream(server.base_url, "/1.0.0/orders/created", token) as stream:
            assert await stream.next_block() is not None
    lines = [line for line in server.stderr().splitlines() if line.strip()]
    assert lines, "the server logged its start"
    for line in lines:
        entry = json.loads(line)
        assert {"ts", "level", "logger", "message"} <= set(entry)


# --- asyncapi export / import ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_asyncapi_export_prints_a_3_0_document(tmp_path: Path, fmt: str) -> None:
    import yaml

    path = write_config(tmp_path, VALID)
    result = run_cli(
        "asyncapi", "export", "--config", str(path), "--api", "Orders", "--format", fmt
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout) if fmt == "json" else yaml.safe_load(result.stdout)
    assert document["asyncapi"].startswith("3.")
    addresses = {c["address"] for c in document["channels"].values()}
    assert "/1.0.0/orders/created" in addresses


def test_asyncapi_export_of_unknown_api_exits_2(tmp_path: Path) -> None:
    path = write_config(tmp_path, VALID)
    result = run_cli("asyncapi", "export", "--config", str(path), "--api", "Nope")
    assert result.returncode == 2
    assert "Nope" in result.stderr


def exported_orders(tmp_path: Path) -> Path:
    """The Orders API of VALID as an AsyncAPI document file."""
    path = write_config(tmp_path, VALID)
    exported = run_cli("asyncapi", "export", "--config", str(path), "--api", "Orders")
    document = tmp_path / "orders.json"
    document.write_text(exported.stdout, encoding="utf-8")
    return document


def assert_check_accepts(tmp_path: Path, api: dict[str, Any]) -> None:
    merged = copy.deepcopy(VALID)
    merged["apis"].append(api)
    checked = run_cli("check", "--config", str(write_config(tmp_path, merged, "merged.yaml")))
    assert checked.returncode == 0, checked.stderr


def test_asyncapi_import_prints_config_that_check_accepts(tmp_path: Path) -> None:
    import yaml

    document = exported_orders(tmp_path)
    result = run_cli(
        "asyncapi",
        "import",
        str(document),
        "--broker",
        "mem",
        "--name",
        "OrdersCopy",
        "--context",
        "/copy",
    )
    assert result.returncode == 0, result.stderr
    imported = yaml.safe_load(result.stdout)["apis"][0]
    original = VALID["apis"][0]
    assert sorted(t["name"] for t in imported["topics"]) == sorted(
        t["name"] for t in original["topics"]
    )
    assert_check_accepts(tmp_path, imported)


def test_asyncapi_import_of_a_broken_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("asyncapi: 3.0.0\nchannels: [", encoding="utf-8")
    result = run_cli("asyncapi", "import", str(bad))
    assert result.returncode == 2
    assert "bad.yaml" in result.stderr


def test_asyncapi_import_with_an_endpoint_prints_an_api_check_accepts(tmp_path: Path) -> None:
    """CONTRACT §13: ``--endpoint URL`` instead of ``--broker``."""
    import yaml

    document = exported_orders(tmp_path)
    result = run_cli(
        "asyncapi",
        "import",
        str(document),
        "--endpoint",
        "http://127.0.0.1:8081",
        "--protocol",
        "sse",
        "--name",
        "Fronted",
        "--context",
        "/fronted",
    )
    assert result.returncode == 0, result.stderr
    imported = yaml.safe_load(result.stdout)["apis"][0]
    assert imported["endpoint"]["production"] == "http://127.0.0.1:8081"
    assert "broker" not in imported
    assert_check_accepts(tmp_path, imported)

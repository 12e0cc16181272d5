"""Every export is a document the official AsyncAPI parser accepts (CONTRACT §8).

The parser is ``@asyncapi/parser`` (pinned in package.json beside this file), run by
``validate.mjs`` with the machine's Node.js; ``scripts/npm-deps.sh`` installs it. A
machine without Node.js fails this suite: it never skips.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.asyncapi import export_document, to_yaml
from bridge.config import Api, Tier, parse_config
from gateway.demo import demo_config
from tests.unit.test_asyncapi import V2_YAML, V3_YAML

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
VALIDATE = HERE / "validate.mjs"

# The first test builds the one parser run (about 36 s on a quiet machine; over 120 s, the
# suite's default limit, beside a 20,000-connection benchmark).
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="session")
def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("Node.js is not installed: the AsyncAPI parser tests need node >= 18 and npm")
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "npm-deps.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/npm-deps.sh failed ({done.returncode}):\n{done.stderr}")
    return found


def parse(node: str, paths: list[Path]) -> tuple[int, list[dict[str, Any]], str]:
    """validate.mjs over the files: exit code, the parser's errors, and all it printed."""
    done = subprocess.run(
        [node, str(VALIDATE), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    shown = f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    assert done.returncode in (0, 1), f"validate.mjs could not run:\n{shown}"
    return done.returncode, json.loads(done.stdout), shown


def api(protocol: str, topics: list[dict[str, Any]], **changes: Any) -> Api:
    spec = {
        "name": f"Demo {protocol}",
        "version": "1.0.0",
        "context": "/{version}/demo",
        "protocol": protocol,
        "broker": "demo",
        "topics": topics,
    }
    return Api.model_validate({**spec, **changes})


EXPORTS = {
    "sse-with-parameters-and-scopes": (
        api(
            "sse",
            [
                {"name": "/created", "channel": "orders.created", "scopes": ["orders:read"]},
                {
                    "name": "/by-region/{region}",
                    "channel": "orders.{region}",
                    "scopes": ["orders:read", "orders:region"],
                    "description": "orders of one region",
                },
                {"name": "/shops/{shop}/items/{item}", "channel": "shops.{shop}.{item}"},
            ],
            description="Orders as Server-Sent Events",
        ),
        "http://127.0.0.1:8080",
    ),
    "websocket-publish-and-both": (
        api(
            "websocket",
            [
                {"name": "/ticks", "channel": "ticks", "scopes": ["ticks:read"]},
                {"name": "/commands", "mode": "publish", "channel": "cmd", "scopes": ["w"]},
                {
                    "name": "/rooms/{room}",
                    "mode": "both",
                    "channel": "chat.{room}",
                    "content_type": "text/plain",
                },
            ],
        ),
        "https://gateway.example.com",
    ),
    "websub": (
        api(
            "websub",
            [
                {"name": "/events", "channel": "events", "scopes": ["events:read"]},
                {"name": "/inbox", "mode": "publish", "channel": "inbox"},
            ],
            context="/hooks",
        ),
        "https://example.com:8443/gw",
    ),
    "no-scopes-at-all": (
        api("sse", [{"name": "/a", "channel": "a"}, {"name": "/a.b", "channel": "b"}]),
        "http://localhost:8080",
    ),
}


EXPORTS.update(
    (f"demo-{demo.name}", (demo, "http://127.0.0.1:8080"))
    for demo in parse_config(demo_config("demo-secret", "admin-token")).apis
)
# CONTRACT §10: each export lists the delivery policy of the tiers its API offers.
TIERS = {
    "Gold": Tier(),
    "Bronze": Tier.model_validate(
        {"delivery": {"conflate": {"key": "data.symbol", "every": "1s"}}}
    ),
    "Digest": Tier.model_validate({"delivery": {"sample": {"max": 1, "per": "5s"}}}),
}
HAND_WRITTEN = {"import-fixture-2.6.yaml": V2_YAML, "import-fixture-3.0.yaml": V3_YAML}


@pytest.fixture(scope="session")
def verdicts(node: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Any]]:
    """One parser run over every export and the import fixtures: the parser's errors by
    file name. One run, because each Node start takes a second or two. The parser takes
    about a CPU second a document, so each export goes to it once, as JSON; its YAML form
    counts as accepted when it reads back as the very same document (below)."""
    folder = tmp_path_factory.mktemp("asyncapi")
    files: list[Path] = []
    for case, (the_api, public_url) in EXPORTS.items():
        document = export_document(the_api, public_url=public_url, tiers=TIERS)
        files.append(folder / f"{case}.json")
        files[-1].write_text(json.dumps(document, indent=2))
    for name, text in HAND_WRITTEN.items():
        files.append(folder / name)
        files[-1].write_text(text)
    _, errors, _ = parse(node, files)
    by_file: dict[str, list[Any]] = {path.name: [] for path in files}
    for error in errors:
        by_file[Path(error["file"]).name].append(error)
    return by_file


@pytest.mark.parametrize("form", ["json", "yaml"])
@pytest.mark.parametrize("case", sorted(EXPORTS))
def test_the_official_parser_accepts_the_export(
    verdicts: dict[str, list[Any]], case: str, form: str
) -> None:
    errors = verdicts[f"{case}.json"]
    assert not errors, f"@asyncapi/parser rejects the {case} export:\n" + json.dumps(
        errors, indent=2
    )
    if form == "yaml":  # the document the parser accepted, written as YAML
        the_api, public_url = EXPORTS[case]
        document = export_document(the_api, public_url=public_url, tiers=TIERS)
        assert yaml.safe_load(to_yaml(document)) == json.loads(json.dumps(document))


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_the_import_fixtures_are_valid_asyncapi(verdicts: dict[str, list[Any]], name: str) -> None:
    """tests/unit/test_asyncapi.py imports real documents, not ones only we would accept."""
    assert not verdicts[name], json.dumps(verdicts[name], indent=2)


def test_the_harness_fails_on_broken_documents(node: str, tmp_path: Path) -> None:
    """Without this, a validate.mjs that accepted everything would pass the tests above."""
    the_api, public_url = EXPORTS["websocket-publish-and-both"]
    document = export_document(the_api, public_url=public_url)
    operation = next(iter(document["operations"].values()))
    operation["action"] = "subscribe"  # AsyncAPI 2 vocabulary, invalid in 3.0
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document))
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("asyncapi: 3.0.0\ninfo: [unclosed\n")
    valid = tmp_path / "valid.json"
    valid.write_text(json.dumps(export_document(the_api, public_url=public_url)))
    code, errors, shown = parse(node, [broken, garbage, valid])
    assert code == 1, shown
    files = {Path(e["file"]).name for e in errors}
    assert files == {"broken.json", "garbage.yaml"}, shown
    assert any(e["path"][-1:] == ["action"] for e in errors), shown

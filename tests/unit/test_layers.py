"""The layers hold because a tool checks them: import-linter (``make lint``) passes on the
tree and fails on a planted upward import or a planted cycle (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bridge", "connectors", "pipelines", "gateway")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def plant(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}  # planted\n")


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_upward_import_fails(tree: Path) -> None:
    plant(tree / "bridge" / "catalog.py", "import gateway.hub")
    result = lint(tree)
    assert result.returncode != 0
    assert "bridge is not allowed to import gateway" in result.stdout


def test_a_cycle_inside_a_package_fails(tree: Path) -> None:
    plant(tree / "bridge" / "cursor.py", "import bridge.catalog")
    plant(tree / "bridge" / "catalog.py", "import bridge.cursor")
    plant(
        tree / "gateway" / "sse.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import gateway.app",
    )
    result = lint(tree)
    assert result.returncode != 0
    assert "No cycles are allowed in bridge" in result.stdout
    assert "No cycles are allowed in gateway" in result.stdout

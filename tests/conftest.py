"""The suite's collection order: the slowest files first.

`make test` runs the files on pytest-xdist workers (``--dist loadfile``); each worker takes
the next file in collection order when it finishes one. A slow file collected late ran
alone at the end of the run while the other workers had nothing left. Started first, it
runs while the many fast files fill the other workers. A file that takes over about 30 s
belongs in this list (``--durations`` shows the slowest tests of a run).
"""

from __future__ import annotations

import pytest

SLOW_FIRST = (
    "tests/e2e/test_window_workers.py",
    "tests/e2e/test_window_logged.py",
    "tests/asyncapi/test_parser_accepts_exports.py",
    "tests/e2e/test_websocket_v1.py",
    "tests/e2e/test_websub_durability.py",
    "tests/e2e/test_robustness.py",
    "tests/e2e/test_outage.py",
    "tests/e2e/test_cluster_log_outage.py",
    "tests/e2e/test_kafka_nack.py",
    "tests/e2e/test_cluster.py",
    "tests/e2e/test_resume.py",
    "tests/browser/test_browser_v1.py",
    "tests/browser/test_portal.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: index for index, path in enumerate(SLOW_FIRST)}
    root = config.rootpath

    def order(item: pytest.Item) -> int:
        return rank.get(item.path.relative_to(root).as_posix(), len(rank))

    items.sort(key=order)  # stable: every other file keeps its place

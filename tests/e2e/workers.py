"""``streambridge worker`` processes for the e2e suite (CONTRACT §11 windows)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.servers import ROOT, STOP_SECONDS

# A rebalance after a kill -9 waits out the session timeout (the broker's minimum is 6 s);
# a window waits this long after its end, so events re-read after the failover count.
SESSION_TIMEOUT = 6.0
EXPIRES = 10.0

# The processes of these tests compile their modules once, into a cache outside the
# source tree, rather than each on its own (PYTHONDONTWRITEBYTECODE may be set): four
# processes compiling at once on a loaded 2-core machine missed the startup deadline.
# Where bytecode is written anyway (`make test` unsets PYTHONDONTWRITEBYTECODE) they use
# the __pycache__ every other process of the run fills: a cache of their own compiled
# everything a second time at the run's busiest moment, its start.
BYTECODE_CACHE: dict[str, str] = (
    {
        "PYTHONDONTWRITEBYTECODE": "",
        "PYTHONPYCACHEPREFIX": str(Path(tempfile.gettempdir()) / "streambridge-test-pycache"),
    }
    if os.environ.get("PYTHONDONTWRITEBYTECODE")
    else {}
)

_ASSIGNED = re.compile(r"-groups\s+\|\s+\{([0-9-]+)\}")


@dataclass(eq=False)
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def groups_partitions(self) -> str | None:
        """The partitions of the groups topic this worker holds once recovered, as Faust
        prints them (``0``, ``0-1``); None while a rebalance or recovery is under way."""
        text = self.log()
        assigned = list(_ASSIGNED.finditer(text))
        if not assigned or "Restore complete!" not in text[assigned[-1].end() :]:
            return None
        return assigned[-1].group(1)


@contextlib.contextmanager
def running_workers(
    directory: Path, config_path: Path, app_id: str, count: int, *, expires: float = EXPIRES
) -> Iterator[list[Worker]]:
    """``count`` worker processes of one Faust app (one consumer group); ``expires``:
    how long after its end a window closes (short where no worker is killed)."""
    workers: list[Worker] = []
    try:
        for index in range(count):
            log_path = directory / f"worker-{index}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "gateway.cli",
                        "worker",
                        "--config",
                        str(config_path),
                        "--app-id",
                        app_id,
                        "--expires",
                        str(expires),
                        "--session-timeout",
                        str(SESSION_TIMEOUT),
                    ],
                    cwd=directory,
                    env={
                        **os.environ,
                        **BYTECODE_CACHE,
                        "PYTHONUNBUFFERED": "1",
                        "PYTHONPATH": str(ROOT),
                    },
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            workers.append(Worker(process, log_path))
        yield workers
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait(STOP_SECONDS)

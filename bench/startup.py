"""Gateway start cost: spawn to ready, the way the e2e suite starts its gateways.

One command (a few seconds a start)::

    .venv/bin/python bench/startup.py --rounds 4

Each round starts ``python -m gateway.cli serve`` with the suite's main config
(tests/e2e/servers.py: seven applications, memory broker, SQLite state in a new
directory) and waits for ``/healthz``, then starts it again on the same store (a restart:
nothing to migrate, nothing new to seed). Reported per kind: wall seconds to ready and the
process's CPU seconds at ready (``/proc/<pid>/stat`` utime+stime, every thread), medians
over the rounds, and the load average. On a shared machine the wall time follows the
load; the CPU seconds are what a start costs the suite (`make test` runs about 150).
Bytecode is assumed compiled (``make bytecode``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.servers import main_config, running_server

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    rounds = parser.parse_args().rounds
    results: dict[str, list[tuple[float, float]]] = {"new store": [], "restart": []}
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(rounds):
            directory = Path(scratch) / str(index)
            for runs in results.values():
                started = time.monotonic()
                with running_server(directory, main_config(directory)) as server:
                    runs.append((time.monotonic() - started, cpu_seconds(server.process.pid)))
    for kind, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{kind:9}  ready after {wall:5.2f} s wall, {cpu:4.2f} CPU s (median of {rounds})")
    print("load average", " ".join(Path("/proc/loadavg").read_text().split()[:3]))


if __name__ == "__main__":
    main()

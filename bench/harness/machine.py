"""The machine under the benchmarks: cores, file limits and ``/proc`` accounting."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import platform
import resource
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def raise_nofile() -> int:
    """Lift the soft open-file limit to the hard one (N connections need N descriptors)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe(*parts: str) -> str:
    """One line naming the CPU, the core count and Python, then ``parts``."""
    head = f"{cpu_model()}, nproc {os.cpu_count()}, Python {platform.python_version()}"
    return "; ".join([head, *parts])


def pick_cores() -> tuple[int | None, int | None]:
    """(server core, client core), or (None, None) when fewer than two cores are usable."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return cores[0], cores[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat_seconds(stat_file: Path) -> tuple[float, float]:
    """(utime, stime) in seconds from a ``/proc/.../stat`` file (proc(5))."""
    stat = stat_file.read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def server_cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of the whole process (all threads), in seconds."""
    return _stat_seconds(Path(f"/proc/{pid}/stat"))


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of the main thread (the event loop) and of all other threads together
    (aiosqlite's database thread, the DNS resolver pool)."""
    out = {"event loop": 0.0, "other threads": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        seconds = sum(_stat_seconds(task / "stat"))
        out["event loop" if task.name == str(pid) else "other threads"] += seconds
    return out


def core_busy_seconds(core: int | None) -> float:
    """Busy seconds (user, nice, system, irq, softirq) of one core, all cores when None.

    Loopback TCP work that the kernel defers to ksoftirqd is not charged to the server
    process, so the busy time of the server's core is reported next to the process's own
    CPU time. It also counts anything else that ran on that core.
    """
    name = "cpu" if core is None else f"cpu{core}"
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == name:
            user, nice, system, _idle, _iowait, irq, softirq = map(int, fields[1:8])
            return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    raise RuntimeError(f"no {name} in /proc/stat")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def event_loop() -> tuple[Callable[[Coroutine[Any, Any, T]], T], str]:
    """uvloop when installed (uvicorn[standard] brings it; the server uses it too)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run, "asyncio"
    return uvloop.run, f"uvloop {importlib.metadata.version('uvloop')}"

"""``streambridge serve --workers N`` (CONTRACT §1, §11): N gateway processes on one port.

Each worker is a whole gateway and a node of the cluster: it binds the port itself with
``SO_REUSEPORT``, so the kernel spreads new connections over the workers by their
addresses (a shared accept socket lets one busy worker take most of them), and one
worker's death leaves the others serving. The supervisor here only starts them, starts
again one that dies, and passes SIGTERM/SIGINT on; it holds the port bound, but not
listening, so no other program takes it while a worker restarts.

Workers share limits through ``cluster.redis``, which is why N > 1 needs it: without it
``max_connections: 10`` would become 10 per worker.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Final

from bridge.config import Config
from bridge.errors import ConfigError, Problem

log = logging.getLogger("streambridge.workers")
STOP_SECONDS: Final = 10.0
QUICK_DEATH_SECONDS: Final = 60.0  # a worker dying this soon after its start ...
MAX_QUICK_DEATHS: Final = 5  # ... this many times in a row stops the whole pool
FIRST_BACKOFF: Final = 0.5  # before starting a worker again; doubles per quick death
MAX_BACKOFF: Final = 8.0
BACKLOG: Final = 2048  # uvicorn's default
PR_SET_PDEATHSIG: Final = 1


def workers_problem(config: Config | None, workers: int) -> ConfigError | None:
    """N > 1 processes need limits they share (CONTRACT §1): ``cluster.redis``."""
    if workers > 1 and (config is None or config.cluster is None or config.cluster.redis is None):
        return ConfigError(
            [Problem("cluster.redis", f"--workers {workers} needs a cluster with redis (§11)")]
        )
    return None


def worker_config(config: Config, index: int) -> Config:
    """Worker ``index``'s config: its own ``data_dir`` below the configured one, since
    two processes must not append to one replay log (gateway.runtime locks it)."""
    gateway = config.gateway
    data_dir = str(Path(gateway.data_path) / f"worker-{index}")
    return config.model_copy(update={"gateway": gateway.model_copy(update={"data_dir": data_dir})})


def die_with_supervisor(supervisor: int) -> None:
    """A worker ends with its supervisor, even one killed with ``kill -9`` (Linux's
    PR_SET_PDEATHSIG; elsewhere nothing): no orphan keeps the port."""
    libc_name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or libc_name is None:
        return
    ctypes.CDLL(libc_name, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def reuse_port_socket(host: str, port: int, *, listen: bool) -> socket.socket:
    """A TCP socket on (host, port) in the port's SO_REUSEPORT group."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        if listen:
            sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


class WorkerPool:
    """Runs ``command + [--worker i]`` N times until a signal stops them all."""

    def __init__(self, command: Sequence[str], workers: int) -> None:
        self.command = list(command)
        self.workers = workers
        self._children: dict[int, tuple[int, subprocess.Popen[bytes], float]] = {}
        self._stopping = False

    def _start(self, index: int) -> None:
        # This interpreter and our own arguments: nothing from outside reaches the command.
        command = [*self.command, "--worker", f"{index}:{os.getpid()}"]
        process = subprocess.Popen(command)  # noqa: S603
        self._children[process.pid] = (index, process, time.monotonic())
        log.info("worker started", extra={"worker": index, "pid": process.pid})

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True
        for _, process, _ in self._children.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    def run(self) -> int:
        # Ignored SIGCHLD (inherited) would reap the workers behind os.wait's back.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        for index in range(self.workers):
            self._start(index)
        quick_deaths = 0
        while self._children:
            pid, status = os.wait()  # a signal's handler runs meanwhile (PEP 475)
            known = self._children.pop(pid, None)
            if known is None:
                continue
            index, _, started = known
            if self._stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            log.warning("worker died; starting it again", extra={"worker": index, "code": code})
            quick = time.monotonic() - started < QUICK_DEATH_SECONDS
            quick_deaths = quick_deaths + 1 if quick else 0
            if quick_deaths >= MAX_QUICK_DEATHS:
                log.error("workers keep dying at start; stopping", extra={"code": code})
                self._stop(signal.SIGTERM, None)
                self._reap()
                return 1
            # A worker failing at start (a config gone, a broken store) is not restarted
            # in a tight loop; a signal meanwhile stops the pool instead.
            time.sleep(min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** max(0, quick_deaths - 1)))
            if not self._stopping:
                self._start(index)
        return 0

    def _reap(self) -> None:
        deadline = time.monotonic() + STOP_SECONDS
        for _, process, _ in list(self._children.values()):
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def serve_workers(config_path: str, host: str, port: int, workers: int) -> int:
    """The supervisor of ``serve --workers N``; the config was checked by the caller."""
    try:
        reserved = reuse_port_socket(host, port, listen=False)
    except OSError as exc:
        print(f"cannot bind {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    command = [sys.executable, "-m", "gateway.cli", "serve", "--config", config_path]
    command += ["--host", host, "--port", str(port)]
    with reserved:
        return WorkerPool(command, workers).run()

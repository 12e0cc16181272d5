"""Gateway processes forked from one that has imported the gateway already.

A gateway start cost about 3 CPU seconds, two of them importing the same 1,100 modules
(FastAPI, pydantic, SQLAlchemy, Alembic, the broker clients, ours); the suite starts about
150 gateways on 2 cores. Each pytest-xdist worker starts one *zygote*
(``python -m tests.e2e.zygote``) that imports every gateway module once, then forks a
child per gateway: the child takes its working directory, environment, arguments and
standard streams, and runs ``gateway.cli.main`` as ``python -m gateway.cli`` would. It is
a real process with its own pid, signals and exit status (its parent, the zygote, reports
the status); only the imports are shared. The technique is the one of Android's zygote
and of ``multiprocessing``'s ``forkserver``.

``STREAMBRIDGE_TEST_FORK=0`` (and coverage runs, whose tracer starts with the interpreter)
start every gateway as a fresh interpreter instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bridge", "connectors", "pipelines", "gateway")
# Modules a start imports lazily, outside our packages' import graph.
LAZY = (
    "uvicorn.loops.uvloop",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.websockets.websockets_sansio_impl",
    "uvicorn.lifespan.on",
    "alembic.command",
    "alembic.runtime.migration",
    "sqlalchemy.dialects.sqlite.aiosqlite",
    "sqlalchemy.dialects.postgresql.psycopg",
    "aiosqlite",
)


def usable() -> bool:
    """Whether gateways may be forked here (not under coverage, not turned off)."""
    return (
        os.environ.get("STREAMBRIDGE_TEST_FORK", "1") != "0"
        and not any(name.startswith("COVERAGE_PROCESS") for name in os.environ)
        and sys.platform == "linux"
    )


# --- the test side ----------------------------------------------------------------------


class ForkedProcess:
    """What the suite uses of ``subprocess.Popen`` for a gateway forked by the zygote."""

    def __init__(self, pid: int, status: socket.socket, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self._status = status  # the zygote writes the exit status here
        self._received = b""

    def poll(self) -> int | None:
        if self.returncode is None:
            self._status.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                self._read()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._status.setblocking(True)
            self._status.settimeout(timeout)
            try:
                self._read()
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0) from None
        assert self.returncode is not None
        return self.returncode

    def _read(self) -> None:
        while not self._received.endswith(b"\n"):
            chunk = self._status.recv(64)
            if not chunk:
                raise RuntimeError(f"the zygote went away before gateway {self.pid} ended")
            self._received += chunk
        self.returncode = int(self._received)
        self._status.close()

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """This worker's zygote, started at its first gateway."""

    _lock = threading.Lock()
    _current: Zygote | None = None

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-m", "tests.e2e.zygote", str(theirs.fileno())],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.DEVNULL,
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
        self.control = ours
        ready = self.control.recv(16)
        if ready != b"ready\n":
            raise RuntimeError(f"the gateway zygote did not start: {ready!r}")

    @classmethod
    def spawn(
        cls, args: list[str], cwd: Path, env: dict[str, str], stdout: int, stderr: int
    ) -> ForkedProcess:
        """Fork a gateway: ``args`` as given to ``python -m gateway.cli``."""
        with cls._lock:
            if cls._current is None or cls._current.process.poll() is not None:
                cls._current = cls()
            zygote = cls._current
            status, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            request = json.dumps({"args": args, "cwd": str(cwd), "env": env}).encode()
            socket.send_fds(
                zygote.control,
                [len(request).to_bytes(4, "big") + request],
                [stdout, stderr, theirs.fileno()],
            )
            theirs.close()
            pid = int(zygote.control.recv(16))
        return ForkedProcess(pid, status, ["gateway.cli", *args])


# --- the zygote side ----------------------------------------------------------------------


def preload() -> None:
    """Import every module of ours and what a start imports lazily."""
    import importlib
    import pkgutil

    for package in PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            if not info.name.endswith("__main__") and ".migrations" not in info.name:
                importlib.import_module(info.name)
    for name in LAZY:
        importlib.import_module(name)
    if threading.active_count() != 1:  # a fork keeps only the calling thread
        raise RuntimeError(f"an import started a thread: {threading.enumerate()}")


def _receive(control: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    size = b""
    fds: list[int] = []
    while len(size) < 4:
        chunk, got, _, _ = socket.recv_fds(control, 4 - len(size), 3)
        if not chunk:
            return None
        size += chunk
        fds += got
    length, body = int.from_bytes(size, "big"), b""
    while len(body) < length:
        chunk = control.recv(length - len(body))
        if not chunk:
            return None
        body += chunk
    return json.loads(body), fds


def _child(request: dict[str, Any], fds: list[int], inherited: list[int]) -> None:
    """In the forked child: become ``python -m gateway.cli <args>``; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in (*inherited, fds[2]):  # the zygote's: the control socket, its siblings'
            os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in (null, fds[0], fds[1]):
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [str(ROOT / "gateway" / "cli.py"), *request["args"]]
        from gateway.cli import main

        code = main(request["args"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(control: socket.socket) -> None:
    """Fork a child per request; report each child's exit status on its status socket."""
    preload()
    waking_r, waking_w = os.pipe()
    os.set_blocking(waking_r, False)
    os.set_blocking(waking_w, False)
    signal.set_wakeup_fd(waking_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the selector through waking_w
    children: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(waking_r, selectors.EVENT_READ)
    control.sendall(b"ready\n")
    while True:
        events = selector.select()
        with contextlib.suppress(BlockingIOError):
            while os.read(waking_r, 512):
                pass
        _reap(children)
        if not any(key.fileobj is control for key, _ in events):
            continue
        received = _receive(control)
        if received is None:  # the worker is gone: so are its gateways
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return
        request, fds = received
        inherited = [control.fileno(), waking_r, waking_w, selector.fileno()]
        inherited += [sock.fileno() for sock in children.values()]
        pid = os.fork()
        if pid == 0:
            _child(request, fds, inherited)
        children[pid] = socket.socket(fileno=fds[2])
        os.close(fds[0])
        os.close(fds[1])
        control.sendall(f"{pid}\n".encode())


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        reporter = children.pop(pid, None)
        if reporter is not None:
            with reporter, contextlib.suppress(OSError):
                reporter.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
    sys.exit(0)

"""A server process the benches start and stop: ``with`` starts it, leaving stops it."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from typing import Self


class ServerProcess:
    proc: subprocess.Popen[bytes] | None = None
    stop_signal = signal.SIGTERM

    def start(self) -> None:
        raise NotImplementedError

    def await_health(self, url: str, seconds: float, exited: Callable[[], str]) -> None:
        """Poll ``url`` until it answers 200; raise (with ``exited()``) if the process
        ends first, or when ``seconds`` pass."""
        assert self.proc is not None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(exited())
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{url} did not answer within {seconds:g} s")

    def stop(self) -> None:
        """The stop signal, then a kill if it is still running 15 s later."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(self.stop_signal)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()  # a server that did not answer in time is still running
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""A server process the benches start and stop: ``with`` starts it, leaving stops it."""

from __future__ import annotations

import signal
import subprocess
from typing import Self


class ServerProcess:
    proc: subprocess.Popen[bytes] | None = None
    stop_signal = signal.SIGTERM

    def start(self) -> None:
        raise NotImplementedError

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
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Loaded by a gateway that ``bench/idle.py --trace`` starts (this directory is on its
PYTHONPATH): tracemalloc from the start, and on SIGUSR1 a snapshot written to
``$STREAMBRIDGE_TRACE.<n>.snap`` (then ``.done``)."""

import os
import signal
import tracemalloc

PREFIX = os.environ.get("STREAMBRIDGE_TRACE")
if PREFIX:
    tracemalloc.start(1)
    taken = [0]

    def _snapshot(signum: int, frame: object) -> None:
        name = f"{PREFIX}.{taken[0]}"
        taken[0] += 1
        tracemalloc.take_snapshot().dump(name + ".snap")
        with open(name + ".done", "w") as done:
            done.write("1")

    signal.signal(signal.SIGUSR1, _snapshot)

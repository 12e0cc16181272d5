"""scripts/service-kafka.sh, the Apache Kafka that `make test` starts: a store grown past
its bound by earlier runs is formatted afresh, because a cold start opens every partition
(5,100 of them kept the broker from answering within the script's 120 s)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from tests.e2e.private_brokers import START_SECONDS, restartable_port, wait_bindable
from tests.e2e.servers import ROOT


def test_a_store_over_its_partition_bound_is_formatted_afresh(tmp_path: Path) -> None:
    port, controller = restartable_port(), restartable_port()
    data = tmp_path / "kafka"
    stale = [data / "logs" / f"earlier-run-{n}-0" for n in range(3)]
    for directory in stale:
        directory.mkdir(parents=True)
    env = {
        **os.environ,
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(controller),
        "KAFKA_DATA": str(data),
        "KAFKA_MAX_PARTITIONS": "2",
    }
    wait_bindable(port, controller)
    try:
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / "service-kafka.sh")],
            env=env,
            timeout=START_SECONDS + 60,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "holds 3 partitions from earlier runs (over 2); formatting it afresh" in (
            done.stdout
        )
        assert not any(directory.exists() for directory in stale)
        assert (data / "logs" / "meta.properties").exists()
    finally:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            os.kill(int((data / "kafka.pid").read_text()), signal.SIGKILL)

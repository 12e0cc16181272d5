"""kcat (Debian package, librdkafka), the third-party producer of the Kafka end-to-end
tests: records the gateway reads were written by a client that shares no code with its
aiokafka. scripts/service-kafka.sh installs it."""

from __future__ import annotations

import asyncio

KAFKA = "127.0.0.1:9092"
KEY_DELIMITER = b"\x1f"  # never inside the tests' keys


async def produce(
    topic: str,
    *values: bytes | None,
    key: bytes | None = None,
    partition: int = 0,
    bootstrap: str = KAFKA,
) -> None:
    """Produce ``values`` in order to one partition with ``acks=all`` and wait until the
    broker acknowledged all of them. ``None`` is a tombstone (a null value: kcat -Z); a
    value must be one line and not empty."""
    lines = []
    for value in values:
        body = value or b""
        assert b"\n" not in body and KEY_DELIMITER not in body, "one line per record"
        assert value is None or value, "kcat sends an empty value as null"
        assert value is not None or key is not None, "kcat skips an empty line"
        lines.append((key + KEY_DELIMITER if key is not None else b"") + body)
    command = ["kcat", "-P", "-b", bootstrap, "-t", topic, "-p", str(partition), "-Z"]
    command += ["-X", "acks=all", "-X", "message.timeout.ms=10000"]
    if key is not None:
        command += ["-K", "\\x1f"]
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await asyncio.wait_for(process.communicate(b"\n".join(lines) + b"\n"), 30)
    assert process.returncode == 0, f"kcat failed: {errors.decode(errors='replace')}"

"""Brokers of a test's own, for tests that stop and start a broker: Mosquitto, RabbitMQ and
Apache Kafka on free loopback ports with their data in the test's directory. The shared
brokers of scripts/services.sh stay up for the tests that run meanwhile (the suite runs in
parallel workers, and other people's tests may use them too).

Each is a context manager yielding a ``PrivateBroker``: its address, ``stop()`` (the broker
goes away and every connection with it) and ``start()`` (back on the same port, with the
data it persisted).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.servers import ROOT, free_port

START_SECONDS = 120.0  # a JVM or an Erlang node on a loaded 2-core machine
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")  # Debian's rabbitmq-server, without its su wrapper


@dataclass
class PrivateBroker:
    """A broker of one test: ``url`` to reach it, ``stop``/``start`` for an outage."""

    url: str
    port: int
    stop: Callable[[], None]
    start: Callable[[], None]


def restartable_port() -> int:
    """A free loopback port below the ephemeral range: while its broker is stopped, no
    client's outgoing connection can take it as its local port."""
    return free_port()


def listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_listening(port: int, what: str, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not listening(port):
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}:\n{tail}")
        time.sleep(0.1)  # polling interval, not synchronisation


def wait_bindable(*ports: int) -> None:
    """Until ``ports`` can be listened on again. While a broker is stopped, any client's
    outgoing connection may take one of its ports as its local ephemeral port (both come
    from the same range); such connections are short-lived, the broker's bind is not
    retried."""
    deadline = time.monotonic() + START_SECONDS
    for port in ports:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the broker
                try:
                    sock.bind(("127.0.0.1", port))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"127.0.0.1:{port} stays taken") from None
            time.sleep(0.1)  # polling interval, not synchronisation


def end(process: subprocess.Popen[bytes] | None, seconds: float = 30.0) -> None:
    """SIGTERM the process group ``process`` leads, and wait for it (SIGKILL after)."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(seconds)


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group: end() takes its children too
        )


@contextlib.contextmanager
def private_mosquitto(directory: Path) -> Iterator[PrivateBroker]:
    """Mosquitto with persistence (QoS 1 sessions survive its restart)."""
    port = restartable_port()
    data = directory / f"mosquitto-{port}"
    data.mkdir(parents=True)
    conf, log = data / "mosquitto.conf", data / "mosquitto.log"
    # Started as root, Mosquitto drops to user "mosquitto" unless told to stay: that user
    # cannot enter the test's private directory, and Mosquitto then persisted nothing
    # (messages queued for a session over the restart were lost).
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n"
        f"persistence true\npersistence_location {data}/\n"
    )
    running: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        running.append(spawn(["mosquitto", "-c", str(conf)], log))
        wait_listening(port, "mosquitto", log)

    def stop() -> None:
        end(running.pop())
        if not (data / "mosquitto.db").exists():
            raise RuntimeError(f"mosquitto on {port} saved no sessions:\n{log.read_text()}")

    start()
    try:
        yield PrivateBroker(f"mqtt://127.0.0.1:{port}", port, stop, start)
    finally:
        while running:
            stop()


@contextlib.contextmanager
def private_rabbitmq(directory: Path) -> Iterator[PrivateBroker]:
    """A RabbitMQ node of its own (name, ports, cookie, database). ``stop`` stops its
    rabbit application: the node stays up, its AMQP listener and every connection go."""
    port, dist = restartable_port(), restartable_port()
    node = f"sbtest{port}@localhost"
    data = directory / f"rabbitmq-{port}"
    data.mkdir(parents=True)
    (data / "env.conf").write_text("")  # not /etc/rabbitmq/rabbitmq-env.conf (the shared node)
    (data / "enabled_plugins").write_text("[].\n")
    env = {
        "HOME": str(data),  # its Erlang cookie, which rabbitmqctl reads too
        "RABBITMQ_CONF_ENV_FILE": str(data / "env.conf"),
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_MNESIA_BASE": str(data / "mnesia"),
        "RABBITMQ_LOG_BASE": str(data / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(data / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(data / "rabbitmq"),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    log = data / "server.log"

    def ctl(command: str) -> None:
        subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-n", node, command],
            env={**os.environ, **env},
            check=True,
            timeout=START_SECONDS,
            capture_output=True,
        )

    def start() -> None:
        ctl("start_app")
        wait_listening(port, "rabbitmq", log)

    server = spawn([str(RABBIT_BIN / "rabbitmq-server")], log, env)
    try:
        wait_listening(port, "rabbitmq", log)
        yield PrivateBroker(
            f"amqp://guest:guest@127.0.0.1:{port}/", port, lambda: ctl("stop_app"), start
        )
    finally:
        end(server, 60)


@contextlib.contextmanager
def private_kafka(directory: Path) -> Iterator[PrivateBroker]:
    """Apache Kafka as scripts/service-kafka.sh runs it (same release, same settings),
    on ports and a store of its own. ``stop`` ends the JVM."""
    port, controller = restartable_port(), restartable_port()
    data = directory / f"kafka-{port}"
    env = {
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(controller),
        "KAFKA_DATA": str(data),
    }
    pid_file = data / "kafka.pid"

    def start() -> None:
        wait_bindable(port, controller)
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / "service-kafka.sh")],
            env={**os.environ, **env},
            timeout=START_SECONDS + 60,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            log = Path(f"{data}.log")
            raise RuntimeError(
                f"service-kafka.sh exited with {done.returncode}:\n{done.stdout}{done.stderr}"
                + (log.read_text(errors="replace")[-4000:] if log.exists() else "")
            )

    def stop() -> None:
        pid = int(pid_file.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)  # polling interval, not synchronisation
        os.kill(pid, signal.SIGKILL)

    start()
    try:
        yield PrivateBroker(f"127.0.0.1:{port}", port, stop, start)
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                stop()

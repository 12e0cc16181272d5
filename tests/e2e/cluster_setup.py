"""A cluster for the e2e suite (CONTRACT §11): gateway processes on one PostgreSQL store,
Redis and Kafka, started together; a Redis of a test's own; events on a fresh topic.

Every node is a real ``streambridge serve`` process with the same config; ``node_ttl``
is small so a killed node's leases lapse within seconds. Client ids carry a fresh
suffix per cluster: Redis keeps a subscription's rolling minute after the test ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from redis import Redis
from redis.exceptions import RedisError

from tests.e2e.helpers import KAFKA, kafka_producer
from tests.e2e.servers import (
    STARTED,
    Server,
    free_port,
    start_process,
    stop_server,
    write_config,
)
from tests.e2e.websub_setup import ADMIN

SHARED_REDIS = "redis://127.0.0.1:6379/0"  # make test starts it
NODE_TTL = 3.0
STARTUP_SECONDS = 120.0  # three imports at once on two loaded cores took over 60 s
TOKEN_ATTEMPTS = 6
SECRET = "cluster-secret-0001"
# tier: (its limits, the application subscribed with it)
TIERS: dict[str, dict[str, int]] = {
    "Pair": {"max_connections": 2},
    "Single": {"max_connections": 1},
    "Six": {"max_connections": 6},
    "Ten": {"events_per_minute": 10},
    "Free": {},
}


@dataclass(frozen=True)
class Cluster:
    nodes: list[Server]
    config: dict[str, Any]
    suffix: str

    def client(self, tier: str) -> str:
        """The client id of the application subscribed with ``tier``."""
        return f"{tier.lower()}-{self.suffix}"


def cluster_config(
    state: str,
    redis: str = SHARED_REDIS,
    *,
    suffix: str | None = None,
    on_redis_down: str = "local",
) -> dict[str, Any]:
    suffix = suffix or uuid.uuid4().hex[:8]
    return {
        "gateway": {
            "public_url": "http://127.0.0.1:8080",
            "state": state,
            "heartbeat": "1s",
            "limits": {"token_attempts_per_minute": TOKEN_ATTEMPTS},
            "admin_token": ADMIN,
        },
        "websub": {"allow_private_callbacks": True, "timeout": "3s"},
        "brokers": {"kafka": {"type": "kafka", "bootstrap": KAFKA}},
        "cluster": {"redis": redis, "node_ttl": f"{NODE_TTL}s", "on_redis_down": on_redis_down},
        "tiers": TIERS,
        "apis": [
            {
                "name": "Limited",
                "version": "1.0.0",
                "context": "/limited",
                "protocol": "sse",
                "broker": "kafka",
                "tiers": list(TIERS),
                "topics": [{"name": "/t/{room}", "channel": "cluster.{room}"}],
            },
            {  # websub_setup.Hub talks to it (BASE)
                "name": "Hooks",
                "version": "1.0.0",
                "context": "/hooks",
                "protocol": "websub",
                "broker": "kafka",
                "topics": [{"name": "/t/{room}", "channel": "cluster.{room}"}],
            },
        ],
        "applications": [
            {
                "name": f"{tier}-{suffix}",
                "client_id": f"{tier.lower()}-{suffix}",
                "client_secret": SECRET,
                "subscriptions": [{"api": "Limited", "version": "1.0.0", "tier": tier}],
            }
            for tier in TIERS
        ]
        + [  # only guessed at: failed token requests lock it out for a minute
            {
                "name": f"Guess-{suffix}",
                "client_id": f"guess-{suffix}",
                "client_secret": SECRET,
                "subscriptions": [{"api": "Limited", "version": "1.0.0", "tier": "Free"}],
            },
            {  # one WebSub subscription at a time, whichever node takes it
                "name": f"Hooks-{suffix}",
                "client_id": f"hooks-{suffix}",
                "client_secret": SECRET,
                "subscriptions": [{"api": "Hooks", "version": "1.0.0", "tier": "Single"}],
            },
        ],
    }


def suffix_of(config: dict[str, Any]) -> str:
    return str(config["applications"][0]["client_id"]).rsplit("-", 1)[1]


def start_node(
    directory: Path,
    config: dict[str, Any],
    *,
    port: int | None = None,
    extra: Sequence[str] = (),
) -> Server:
    """A gateway process, not yet healthy (see :func:`running_nodes`)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    path = write_config(directory, config, f"config-{port}.yaml")
    log_path = directory / f"server-{port}.stderr"
    args = [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)]
    with log_path.open("wb") as log, log_path.with_suffix(".stdout").open("wb") as out:
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        args += ["--config", str(path), *extra]
        process = start_process(args, directory, environment, out, log, forkable=not extra)
    server = Server(port, process, log_path, directory, config)
    STARTED.append(server)
    return server


@contextlib.contextmanager
def running_nodes(directory: Path, configs: list[dict[str, Any]]) -> Iterator[list[Server]]:
    """One gateway per config, started together (each takes seconds to import), yielded
    once every one answers /healthz; stopped with SIGTERM at the end (unless killed)."""
    nodes = [start_node(directory / f"node-{i}", c) for i, c in enumerate(configs)]
    try:
        with ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(wait_healthy, nodes))
        yield nodes
    finally:
        for node in nodes:
            stop_server(node)


def wait_healthy(node: Server, timeout: float = STARTUP_SECONDS) -> None:
    """Until ``node`` answers /healthz: nodes start together on 2 shared cores, so each
    import takes longer than one server's alone."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                raise RuntimeError(f"node exited with {node.process.returncode}:\n{node.stderr()}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{node.base_url}/healthz").status_code == 200:
                    return
            time.sleep(0.05)  # polling interval, not synchronisation
    raise RuntimeError(f"node not healthy within {timeout}s:\n{node.stderr()}")


async def produce(channel: str, count: int) -> None:
    """``count`` events ``{"n": i}`` on the Kafka topic ``channel``, acknowledged."""
    async with kafka_producer() as producer:
        for i in range(count):
            await producer.send(channel, f'{{"n": {i}}}'.encode())
        await producer.flush()


async def readyz(node: Server) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5.0) as client:
        return await client.get(f"{node.base_url}/readyz")


class OwnRedis:
    """A redis-server of one test on a free loopback port, stopped and started at will
    (the shared one on 6379 serves everybody else and is never stopped)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.command = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = (self.directory / "redis.log").open("ab")
        with log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=log)
        client = Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10.0
        try:
            while time.monotonic() < deadline:  # until it answers, not a fixed wait
                with contextlib.suppress(RedisError):
                    if client.ping():
                        return
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {self.process.returncode}")
                time.sleep(0.05)  # polling interval of a process start
        finally:
            client.close()
        raise RuntimeError("redis-server did not answer within 10 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None


NGINX_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log {dir}/access.log;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  upstream gateways {{
{servers}
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://gateways;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_buffering off;
      proxy_read_timeout 1h;
      proxy_connect_timeout 2s;
      proxy_next_upstream error timeout;
    }}
  }}
}}
"""


class NginxFront:
    """Debian's nginx as a plain load balancer before the nodes: an instance of its own
    on a free port, its config and files in a temporary directory."""

    def __init__(self, directory: Path, nodes: list[Server]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = free_port()
        servers = "\n".join(
            f"    server 127.0.0.1:{node.port} max_fails=1 fail_timeout=10s;" for node in nodes
        )
        self.conf = directory / "nginx.conf"
        self.conf.write_text(NGINX_CONF.format(dir=directory, port=self.port, servers=servers))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> NginxFront:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        log = (self.directory / "nginx.stderr").open("ab")
        with log:
            self.process = subprocess.Popen(
                [binary, "-p", str(self.directory), "-c", str(self.conf), "-g", "daemon off;"],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 10.0
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError((self.directory / "nginx.stderr").read_text())
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.base_url}/healthz").status_code == 200:
                        return self
                time.sleep(0.05)  # polling interval of a process start
        raise RuntimeError("nginx did not answer within 10 s")

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # nginx's graceful stop
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def children_of(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found

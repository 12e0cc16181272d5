"""Real gateway processes for the e2e suite: config files, free ports, start and stop.

A server is ``python -m gateway.cli serve`` as a subprocess on 127.0.0.1, polled on
``/healthz`` until it answers (with a deadline), terminated and waited for at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from bridge.store import Store
from tests.e2e import zygote
from tests.e2e.zygote import ForkedProcess, Zygote

ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 60.0  # a loaded 2-core machine, parallel workers: a deadline, not a target
STOP_SECONDS = 10.0

MAIN_SECRET = "main-secret-0001"
SECRETS = {
    "main": MAIN_SECRET,
    "nosub": "nosub-secret-0001",
    "blocked": "blocked-secret-0001",
    "single": "single-secret-0001",
    "trickle-sse": "trickle-sse-secret-01",
    "trickle-ws": "trickle-ws-secret-01",
    "trickle-ops": "trickle-ops-secret-01",
}


def free_port() -> int:
    """A free loopback port below the ephemeral range. A port the OS hands out (bind to
    0) can become an outgoing connection's local port before the server binds it: under
    load (a 20,000-connection benchmark beside the suite) a gateway then failed to start
    with "address already in use"."""
    first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(first_ephemeral // 2, first_ephemeral)
        if port_is_free(port):
            return port


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def state_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'state.db'}"


def write_config(directory: Path, config: dict[str, Any], name: str = "config.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@dataclass(eq=False)
class Server:
    """A running gateway process and where to reach it."""

    port: int
    process: subprocess.Popen[bytes] | ForkedProcess
    log_path: Path
    directory: Path
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stdout(self) -> str:
        return self.log_path.with_suffix(".stdout").read_text(encoding="utf-8", errors="replace")

    def signing_key(self) -> dict[str, str]:
        """The gateway's ES256 signing key as its state store holds it: {kid, pem}."""

        async def read() -> tuple[str, str] | None:
            async with Store.from_url(state_url(self.directory)) as store:
                return await store.signing_key("ES256")

        # Tests call this from inside their event loop: read on a thread of its own.
        with ThreadPoolExecutor(1) as pool:
            found = pool.submit(asyncio.run, read()).result()
        assert found is not None, "the gateway has not stored a signing key"
        return {"kid": found[0], "pem": found[1]}


STARTED: list[Server] = []


def start_process(
    args: list[str],
    directory: Path,
    environment: dict[str, str],
    out: IO[bytes],
    log: IO[bytes],
    forkable: bool,
) -> subprocess.Popen[bytes] | ForkedProcess:
    """``args`` as a process in ``directory``; a plain ``gateway.cli serve`` (``forkable``)
    forked from the worker's zygote (tests/e2e/zygote.py) where that is on."""
    environment = {**environment, "PYTHONPATH": str(ROOT)}
    if forkable and zygote.usable():
        assert args[:3] == [sys.executable, "-m", "gateway.cli"], args
        return Zygote.spawn(args[3:], directory, environment, out.fileno(), log.fileno())
    return subprocess.Popen(
        args, cwd=directory, env=environment, stdin=subprocess.DEVNULL, stdout=out, stderr=log
    )


def _wait_healthy(server: Server, startup: float = STARTUP_SECONDS) -> None:
    deadline = time.monotonic() + startup
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {server.process.returncode} before answering:\n"
                    + server.stderr()
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{server.base_url}/healthz").status_code == 200:
                    return
            time.sleep(0.05)  # polling interval, not synchronisation
    raise RuntimeError(f"server not healthy within {startup}s:\n" + server.stderr())


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(STOP_SECONDS)


@contextlib.contextmanager
def running_server(
    directory: Path,
    config: dict[str, Any] | None,
    *,
    via_env: bool = False,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
    port: int | None = None,
    startup: float = STARTUP_SECONDS,
) -> Iterator[Server]:
    """Start a gateway with ``config`` (None: the embedded demo), yield it once healthy.

    ``port``: the same port again, for a restart under clients that reconnect to it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    args = command or [sys.executable, "-m", "gateway.cli", "serve"]
    args = [*args, "--port", str(port)]
    if config is not None:
        path = write_config(directory, config, f"config-{port}.yaml")
        if via_env:
            environment["STREAMBRIDGE_CONFIG"] = str(path)
        else:
            args += ["--config", str(path)]
    else:
        environment.pop("STREAMBRIDGE_CONFIG", None)
    log_path = directory / f"server-{port}.stderr"
    with log_path.open("wb") as log, log_path.with_suffix(".stdout").open("wb") as out:
        process = start_process(args, directory, environment, out, log, command is None)
    server = Server(port, process, log_path, directory, config or {})
    STARTED.append(server)
    try:
        _wait_healthy(server, startup)
        yield server
    finally:
        stop_server(server)


# --- the shared configuration -----------------------------------------------------------


def application_to_all(
    client_id: str, secret: str, apis: list[dict[str, Any]], tier: str
) -> dict[str, Any]:
    """A config application subscribed to every API of ``apis`` with ``tier``."""
    return {
        "name": client_id,
        "client_id": client_id,
        "client_secret": secret,
        "subscriptions": [{"api": a["name"], "version": a["version"], "tier": tier} for a in apis],
    }


def main_config(directory: Path) -> dict[str, Any]:
    """One gateway for most tests; each test uses fresh channels through path parameters."""
    state_apis = []
    for state, short in (("CREATED", "draft"), ("RETIRED", "old"), ("BLOCKED", "frozen")):
        for protocol in ("sse", "websocket"):
            state_apis.append(
                {
                    "name": f"{short}-{protocol}",
                    "version": "1.0.0",
                    "context": f"/{short}-{protocol}",
                    "protocol": protocol,
                    "broker": "mem",
                    "state": state,
                    "topics": [{"name": "/t", "channel": f"{short}.{protocol}"}],
                }
            )
    apis: list[dict[str, Any]] = [
        {
            "name": "Events",
            "version": "1.0.0",
            "context": "/events",
            "protocol": "sse",
            "broker": "mem",
            "topics": [
                {"name": "/t/{room}", "channel": "e2e.{room}", "scopes": ["events:read"]},
                {"name": "/other/{room}", "channel": "other.{room}", "scopes": ["other:read"]},
                {
                    "name": "/by-region/{region}",
                    "channel": "orders.{region}",
                    "scopes": ["events:read"],
                },
                {
                    "name": "/big/{room}",
                    "channel": "e2e.{room}",
                    "scopes": ["events:read"],
                    "pipeline": [
                        {"filter": "data.amount > 100"},
                        {"map": "{'id': data.id, 'amount': data.amount}"},
                    ],
                },
                {
                    "name": "/stats/{room}",
                    "channel": "e2e.{room}",
                    "scopes": ["events:read"],
                    "pipeline": [
                        {
                            "window": {
                                "tumbling": "1s",
                                "group_by": "data.region",
                                "aggregate": {"total": "sum(data.amount)", "orders": "count()"},
                            }
                        }
                    ],
                },
                {"name": "/fixed", "channel": "e2e.fixed", "scopes": ["events:read"]},
            ],
        },
        {
            "name": "Feed",
            "version": "1.0.0",
            "context": "/feed",
            "protocol": "websocket",
            "broker": "mem",
            "topics": [
                {
                    "name": "/in/{ns}/{room}",
                    "mode": "publish",
                    "channel": "{ns}.{room}",
                    "scopes": ["feed:write"],
                },
                {"name": "/watch/{room}", "channel": "e2e.{room}", "scopes": ["feed:read"]},
                {
                    "name": "/chat/{room}",
                    "mode": "both",
                    "channel": "e2e.{room}",
                    "scopes": ["feed:write"],
                },
            ],
        },
        {
            "name": "Short",
            "version": "1.0.0",
            "context": "/short",
            "protocol": "sse",
            "broker": "mem",
            "replay": {"max_events": 3},
            "topics": [{"name": "/t/{room}", "channel": "short.{room}", "scopes": ["events:read"]}],
        },
        *state_apis,
    ]

    def subscribe(names: list[str], tier: str, state: str = "ACTIVE") -> list[dict[str, Any]]:
        return [{"api": name, "version": "1.0.0", "tier": tier, "state": state} for name in names]

    everything = [api["name"] for api in apis]
    return {
        "gateway": {
            "public_url": "http://127.0.0.1:8080",
            "state": state_url(directory),
            "heartbeat": "1s",
            "max_message_bytes": 1024,
            # Many tests of the session send wrong credentials from one address.
            "limits": {"token_attempts_per_minute": 100_000},
        },
        "brokers": {"mem": {"type": "memory"}},
        "tiers": {
            "Unlimited": {},
            "OneConnection": {"max_connections": 1},
            "Trickle": {"events_per_minute": 3},
        },
        "apis": apis,
        "applications": [
            {
                "name": "main",
                "client_id": "main",
                "client_secret": SECRETS["main"],
                "subscriptions": subscribe(everything, "Unlimited"),
            },
            {
                "name": "nosub",
                "client_id": "nosub",
                "client_secret": SECRETS["nosub"],
                "subscriptions": subscribe(["Events"], "Unlimited"),
            },
            {
                "name": "blocked",
                "client_id": "blocked",
                "client_secret": SECRETS["blocked"],
                "subscriptions": subscribe(["Events", "Feed"], "Unlimited", "BLOCKED"),
            },
            {
                "name": "single",
                "client_id": "single",
                "client_secret": SECRETS["single"],
                "subscriptions": subscribe(["Events", "Feed"], "OneConnection"),
            },
            *(
                {
                    "name": name,
                    "client_id": name,
                    "client_secret": SECRETS[name],
                    "subscriptions": subscribe([api], "Trickle"),
                }
                for name, api in (
                    ("trickle-sse", "Events"),
                    ("trickle-ws", "Feed"),
                    ("trickle-ops", "Events"),
                )
            ),
        ],
    }


SLOW_SECRET = "slow-secret-01"


def slow_config(directory: Path) -> dict[str, Any]:
    """A gateway with small per-client queues (gateway.client_queue: 8)."""
    return {
        "gateway": {"state": state_url(directory), "client_queue": 8},
        "brokers": {"mem": {"type": "memory"}},
        "tiers": {"Free": {}},
        "apis": [
            {
                "name": "Slow",
                "version": "1.0.0",
                "context": "/slow",
                "broker": "mem",
                # 60 events of 100 kB are resumed from (test_direct_fanout): past the
                # default replay.max_bytes (1 MiB).
                "replay": {"max_events": 1000, "max_bytes": 16 << 20},
                "topics": [{"name": "/t/{room}", "channel": "slow.{room}"}],
            },
            {
                "name": "SlowFeed",
                "version": "1.0.0",
                "context": "/slow-feed",
                "protocol": "websocket",
                "broker": "mem",
                "topics": [
                    {"name": "/in/{room}", "mode": "publish", "channel": "slow.{room}"},
                    {"name": "/out/{room}", "channel": "slow.{room}"},
                ],
            },
        ],
        "applications": [
            {
                "name": "s",
                "client_id": "s",
                "client_secret": SLOW_SECRET,
                "subscriptions": [
                    {"api": "Slow", "version": "1.0.0", "tier": "Free"},
                    {"api": "SlowFeed", "version": "1.0.0", "tier": "Free"},
                ],
            }
        ],
    }

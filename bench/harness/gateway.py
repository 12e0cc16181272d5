"""A gateway under test: its config file and its process (``python -m gateway.cli serve``),
pinned to one core, polled on ``/healthz`` until it answers, stopped with a signal."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .machine import free_port, raise_nofile
from .process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = "bench"
TIER = "Unlimited"
SSE_PATH = "/bench-sse/1/events"  # the topic of sse_api()
WS_PATH = "/bench-ws/1/publish"  # the topic of publish_api()
WS_SUB_PATH = "/bench-wss/1/events"  # the topic of ws_subscribe_api()


def api(
    name: str,
    protocol: str,
    channel: str,
    *,
    version: str = "1",
    context: str | None = None,
    topic: str = "/events",
    mode: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """One API with one topic on the broker ``bench``, open to the tier without limits."""
    entry: dict[str, Any] = {"name": topic, "channel": channel}
    if mode is not None:
        entry["mode"] = mode
    return {
        "name": name,
        "version": version,
        "context": context or f"/{name.lower()}",
        "protocol": protocol,
        "broker": "bench",
        "tiers": [TIER],
        "topics": [entry],
        **options,
    }


def sse_api(channel: str) -> dict[str, Any]:
    """``BenchSSE``: one SSE subscribe topic on ``channel``, at ``SSE_PATH``."""
    return api("BenchSSE", "sse", channel, context="/bench-sse")


def ws_subscribe_api(channel: str) -> dict[str, Any]:
    """``BenchWSSub``: one WebSocket subscribe topic on ``channel``, at ``WS_SUB_PATH``."""
    return api("BenchWSSub", "websocket", channel, context="/bench-wss")


def publish_api(channel: str) -> dict[str, Any]:
    """``BenchWS``: one WebSocket publish topic on ``channel``, at ``WS_PATH``."""
    return api(
        "BenchWS", "websocket", channel, context="/bench-ws", topic="/publish", mode="publish"
    )


class Gateway(ServerProcess):
    """One ``streambridge serve`` process on a free loopback port, with a config of its own.

    It runs in ``workdir`` (its data stays out of the source tree) with ``root`` on
    ``PYTHONPATH``, so ``--server-root`` can compare two checkouts. ``profile`` names a
    file: the server then runs under cProfile and is stopped with SIGINT, which lets
    cProfile write it (SIGTERM would not).
    """

    def __init__(
        self,
        workdir: Path,
        core: int | None = None,
        root: Path = ROOT,
        profile: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.root = root
        self.core = core
        self.profile = profile
        self.port = free_port()
        self.secret = secrets.token_urlsafe(18)
        self.config = workdir / f"bench-{self.port}.yaml"
        self.log = workdir / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.args: list[str] = []  # more arguments of ``serve`` (``--workers 2``)
        self.start_seconds = 30.0
        self.paths: list[str] = []  # more PYTHONPATH entries (bench/idle.py's tracing hook)

    def configure(
        self,
        broker: dict[str, Any],
        apis: list[dict[str, Any]],
        client_queue: int = 4096,
        coalesce: str | None = None,
        tcp_nodelay: bool = True,
        **sections: Any,
    ) -> None:
        """Write the config: the broker ``bench``, ``apis`` and one application
        (``CLIENT_ID``) subscribed to every one of them on the tier without limits."""
        config = {
            "gateway": {
                "public_url": self.url(""),
                "state": f"sqlite:///{self.workdir / f'state-{self.port}.db'}",
                "client_queue": client_queue,
                **({"coalesce": coalesce} if coalesce else {}),
                **({} if tcp_nodelay else {"tcp_nodelay": False}),
            },
            **sections,
            "brokers": {"bench": broker},
            "tiers": {TIER: {}},
            "apis": apis,
            "applications": [
                {
                    "name": "bench",
                    "client_id": CLIENT_ID,
                    "client_secret": self.secret,
                    "subscriptions": [
                        {"api": a["name"], "version": a["version"], "tier": TIER} for a in apis
                    ],
                }
            ],
        }
        self.config.write_text(yaml.safe_dump(config))

    def _preexec(self) -> None:
        raise_nofile()
        if self.core is not None:
            os.sched_setaffinity(0, {self.core})

    def start(self) -> None:
        python = [sys.executable]
        if self.profile:
            python += ["-m", "cProfile", "-o", self.profile]
        command = [*python, "-m", "gateway.cli", "serve"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*command, "--config", str(self.config), "--port", str(self.port), *self.args],
                cwd=self.workdir,
                env={**os.environ, "PYTHONPATH": os.pathsep.join([str(self.root), *self.paths])},
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=self._preexec,  # this process has no other threads
            )
        self.await_health(
            self.url("/healthz"),
            self.start_seconds,
            lambda: f"server exited; see {self.log}:\n{self.log.read_text()}",
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def token(self) -> str:
        body = urllib.parse.urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": self.secret,
            }
        ).encode()
        request = urllib.request.Request(
            self.url("/oauth2/token"),
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return str(json.load(resp)["access_token"])

    @property
    def stop_signal(self) -> signal.Signals:  # type: ignore[override]
        """SIGINT under cProfile, which then writes its file (SIGTERM would not)."""
        return signal.SIGINT if self.profile else signal.SIGTERM

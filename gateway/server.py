"""Run the gateway under uvicorn with the settings the contract needs."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import resource
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from bridge.config import Config
from gateway.app import create_app
from gateway.edge import bounded_protocol
from gateway.heap import return_large_blocks
from gateway.logs import access_log_enabled
from gateway.runtime import Runtime
from gateway.sse_express import SseExpress
from gateway.stall import watch_loop
from gateway.websocket_protocol import OutletWebSocketProtocol


class _Server(uvicorn.Server):
    """Ends open streams (SSE clients get their stream closed) as soon as a stop is asked."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime

    def handle_exit(self, sig: int, frame: Any) -> None:
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().call_soon_threadsafe(self.runtime.begin_shutdown)
        super().handle_exit(sig, frame)


def tune_gc() -> None:
    """Fewer, later collections: one event wakes every writer of a topic, and the default
    gen-0 threshold (700) then ran the cyclic GC several times per event (15% of server CPU
    and the p99 spikes at N=1000 in BENCHMARKS.md). Start-up objects are frozen out of it."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def raise_open_file_limit() -> int:
    """Lift the soft limit on open files to the hard one (CONTRACT §4c): idle sockets
    of hostile clients must not leave none for /healthz and open streams. Returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def build_server(
    config: Config,
    host: str,
    port: int,
    background: list[Callable[[Runtime], Awaitable[None]]] | None = None,
) -> uvicorn.Server:
    app = create_app(config)
    runtime = app.runtime
    runtime.background.extend([watch_loop, *(background or [])])
    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=bounded_protocol(config.gateway.limits, SseExpress(runtime, app.cors)),
        ws=OutletWebSocketProtocol,  # uvicorn's websockets-sansio, with the outlet
        ws_max_size=config.gateway.max_message_bytes,
        ws_ping_interval=config.gateway.heartbeat,
        ws_ping_timeout=config.gateway.ping_timeout,
        ws_per_message_deflate=False,
        lifespan="on",
        access_log=access_log_enabled(),  # redacted like every log (gateway/logs.py)
        log_config=None,
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    tune_gc()
    raise_open_file_limit()
    return_large_blocks()
    return _Server(uv_config, runtime)

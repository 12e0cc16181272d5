"""The ASGI application: data-plane topic URLs on a lean path, the rest through FastAPI.

Any path outside the gateway's own prefixes is a data-plane request, so the §4 order
holds for unknown APIs too (401 before 404). CORS (§4b) wraps both planes. Each
data-plane request gets a ``connection`` id bound to its log lines; admission binds the
client and the API.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from bridge.config import RESERVED_PREFIXES, Config, format_path
from bridge.errors import AccessDenied, BridgeError, ConfigError, Problem
from gateway.access import admit, query_params, refused
from gateway.cors import Cors
from gateway.edge import BodyLimit
from gateway.errors import answer, problem
from gateway.logs import connection_id, fields_scope
from gateway.management import document_api_body
from gateway.management import router as management_router
from gateway.oauth import router as oauth_router
from gateway.outlet import outlet_of
from gateway.portal import router as portal_router
from gateway.runtime import Runtime
from gateway.sse import resume_id, serve_sse, start_at
from gateway.webhooks import router as webhooks_router
from gateway.websocket import serve_websocket
from gateway.websub_endpoints import serve_websub


class Gateway:
    """ASGI entry point: dispatches to the data plane or to the FastAPI control plane."""

    def __init__(self, runtime: Runtime, control: FastAPI) -> None:
        self.runtime = runtime
        self.control = control
        bounded = BodyLimit(self._dispatch, runtime.config.gateway.limits.max_body_bytes)
        self.cors = Cors(bounded, runtime)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.cors(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not scope["path"].startswith(
            RESERVED_PREFIXES
        ):
            with fields_scope(connection=connection_id()):
                if scope["type"] == "websocket":
                    await serve_websocket(self.runtime, scope, receive, send, _headers(scope))
                else:
                    await self._http(scope, receive, send, _headers(scope))
            return
        await self.control(scope, receive, send)

    async def _http(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]
    ) -> None:
        path = scope["path"]
        resolved = self.runtime.catalog.resolve(path)
        if resolved is not None and resolved[0].api.protocol == "websub":
            await serve_websub(self.runtime, scope, receive, send, headers, *resolved)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await problem(405, "topics answer GET", headers={"Allow": "GET"})(scope, receive, send)
            return
        query = query_params(scope)
        try:
            admitted = await admit(
                self.runtime, path=path, headers=headers, query=query, protocol="sse"
            )
            start = start_at(query)
            if start is False:
                await problem(400, "from must be earliest or latest", instance=path)(
                    scope, receive, send
                )
                return
            resume_from = resume_id(headers, query)
            direct_head = "origin" not in headers  # else CORS adds headers through ASGI
            del headers, query  # not held for the stream's life (memory per connection)
            await serve_sse(
                self.runtime,
                admitted,
                resume_from,
                receive,
                send,
                start=start,
                outlet=outlet_of(scope) if scope["method"] == "GET" else None,
                direct_head=direct_head,
            )
        except AccessDenied as exc:  # raised only before the response starts
            await refused(self.runtime, exc).response(instance=path)(scope, receive, send)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


def create_app(config: Config) -> Gateway:
    runtime = Runtime(config)
    control = FastAPI(
        title="Streambridge",
        version="0.1.0",
        lifespan=runtime.lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    control.include_router(oauth_router(runtime))
    control.include_router(management_router(runtime))
    document_api_body(control)
    control.include_router(webhooks_router(runtime))
    control.include_router(portal_router(runtime, control))

    @control.exception_handler(BridgeError)
    async def bridge_problem(request: Request, exc: BridgeError) -> Response:
        return answer(exc).response(instance=request.url.path)

    @control.exception_handler(StarletteHTTPException)
    async def http_problem(request: Request, exc: StarletteHTTPException) -> Response:
        return problem(
            exc.status_code,
            str(exc.detail),
            instance=request.url.path,
            headers=getattr(exc, "headers", None),
        )

    @control.exception_handler(RequestValidationError)
    async def validation_problem(request: Request, exc: RequestValidationError) -> Response:
        problems = [Problem(format_path(tuple(e["loc"])), e["msg"]) for e in exc.errors()]
        return answer(ConfigError(problems)).response(instance=request.url.path)

    @control.get("/healthz", tags=["operations"])
    async def healthz() -> Any:
        return {"status": "ok"}

    @control.get("/readyz", tags=["operations"])
    async def readyz() -> Any:
        checks = await runtime.readiness()
        failing = [name for name, ok in checks.items() if not ok]
        tolerated = runtime.tolerated()  # a cluster without Redis serves on (§11)
        ready = not runtime.stopping and all(name in tolerated for name in failing)
        status = "unavailable" if not ready else "degraded" if failing else "ready"
        body: dict[str, Any] = {"status": status, "checks": checks}
        # Why a task check fails: its last error (connector errors name brokers, not URLs).
        errors = {
            check: error
            for name, error in runtime.failing_tasks().items()
            if (check := f"task:{name}") in checks
        }
        if errors:
            body["errors"] = errors
        if not ready:
            body["detail"] = "not ready: " + (", ".join(failing) or "shutting down")
        elif failing:
            body["detail"] = "degraded: " + ", ".join(failing)
        return JSONResponse(body, status_code=200 if ready else 503)

    @control.get("/metrics", tags=["operations"])
    async def metrics() -> Any:
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    gateway = Gateway(runtime, control)
    return gateway

"""The ASGI application: data-plane topic URLs on a lean path, the rest through FastAPI.

Any path outside the gateway's own prefixes is a data-plane request, so the §4 order
holds for unknown APIs too (401 before 404).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from bridge.asyncapi import AsyncApiError
from bridge.config import RESERVED_PREFIXES, Config, format_path
from bridge.errors import AccessDenied, ConfigError, IllegalTransition
from bridge.store import NotFound, StoreError
from gateway.access import admit, query_params
from gateway.errors import denial_response, denial_status, problem
from gateway.management import router as management_router
from gateway.oauth import router as oauth_router
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

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and not scope["path"].startswith(
            RESERVED_PREFIXES
        ):
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            if scope["type"] == "websocket":
                await serve_websocket(self.runtime, scope, receive, send, headers)
            else:
                await self._http(scope, receive, send, headers)
            return
        await self.control(scope, receive, send)

    async def _http(self, scope: Any, receive: Any, send: Any, headers: dict[str, str]) -> None:
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
            await serve_sse(
                self.runtime, admitted, resume_id(headers, query), receive, send, start=start
            )
        except AccessDenied as exc:  # raised only before the response starts
            self.runtime.metrics.rejected.labels(str(denial_status(exc))).inc()
            await denial_response(exc, instance=path)(scope, receive, send)


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
    control.include_router(webhooks_router(runtime))

    @control.exception_handler(StoreError)
    async def store_problem(request: Request, exc: StoreError) -> Response:
        status = 404 if isinstance(exc, NotFound) else 409
        return problem(status, str(exc), instance=request.url.path)

    @control.exception_handler(IllegalTransition)
    async def transition_problem(request: Request, exc: IllegalTransition) -> Response:
        return problem(409, str(exc), instance=request.url.path, state=exc.state, action=exc.action)

    @control.exception_handler(ConfigError)
    async def config_problem(request: Request, exc: ConfigError) -> Response:
        errors = [{"field": p.path, "message": p.message} for p in exc.problems]
        return problem(
            422, "; ".join(str(p) for p in exc.problems), instance=request.url.path, errors=errors
        )

    @control.exception_handler(AsyncApiError)
    async def asyncapi_problem(request: Request, exc: AsyncApiError) -> Response:
        return problem(
            422, f"the AsyncAPI document does not parse: {exc}", instance=request.url.path
        )

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
        errors = [
            {"field": format_path(tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, detail, instance=request.url.path, errors=errors)

    @control.get("/healthz", tags=["operations"])
    async def healthz() -> Any:
        return {"status": "ok"}

    @control.get("/readyz", tags=["operations"])
    async def readyz() -> Any:
        checks = await runtime.readiness()
        ready = all(checks.values()) and not runtime.stopping
        failing = [name for name, ok in checks.items() if not ok]
        body = {"status": "ready" if ready else "unavailable", "checks": checks}
        if not ready:
            body["detail"] = "not ready: " + (", ".join(failing) or "shutting down")
        return JSONResponse(body, status_code=200 if ready else 503)

    @control.get("/metrics", tags=["operations"])
    async def metrics() -> Any:
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    gateway = Gateway(runtime, control)
    return gateway

"""Browsers on other origins (CONTRACT §4b), on Starlette's CORSMiddleware.

Which origins may read an answer: on an API's URLs its own ``cors.allow_origins`` when
set, else ``gateway.cors.allow_origins``; the token endpoint and JWKS follow the
gateway's. Other control-plane URLs (management API, portal) get no CORS headers.

Starlette adds ``Access-Control-Allow-Origin`` and ``Vary: Origin`` where the response
starts, so streaming answers and error answers carry them alike; it never allows
credentials here. Two answers differ from §4b and are remapped: a good preflight is 204
(Starlette: 200 "OK"), a refused one 403 problem+json (Starlette: 400 text).

WebSocket handshakes are no CORS requests: a browser sends ``Origin`` and trusts the
server to check it, so a present ``Origin`` outside a non-empty list is refused with 403.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from bridge.config import RESERVED_PREFIXES
from gateway.errors import problem
from gateway.runtime import Runtime

METHODS = ("GET", "HEAD", "POST")
HEADERS = ("Authorization", "Content-Type", "Last-Event-ID")
MAX_AGE = 600
# Beyond the safelisted response headers, what a page needs to read: when to retry a 429,
# the WebSub discovery links, and the challenge of a 401.
EXPOSED = ("Retry-After", "Link", "WWW-Authenticate")
OWN_URLS = ("/oauth2/token", "/.well-known/jwks.json")
_BODY_HEADERS = ("content-length", "content-type")


class _Policy(CORSMiddleware):
    """One list of origins; preflights answered as §4b words them."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=METHODS,
            allow_headers=HEADERS,
            allow_credentials=False,
            expose_headers=EXPOSED,
            max_age=MAX_AGE,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        starlette = super().preflight_response(request_headers)
        headers = {k: v for k, v in starlette.headers.items() if k not in _BODY_HEADERS}
        if starlette.status_code == 200:
            return Response(status_code=204, headers=headers)
        refusal = bytes(starlette.body).decode()  # "Disallowed CORS origin, headers"
        return problem(403, refusal, code="cors_refused", headers=headers)


class Cors:
    """ASGI middleware choosing the origins of each URL, then applying them."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self._policies: dict[tuple[str, ...], _Policy] = {}

    def origins(self, path: str) -> tuple[str, ...] | None:
        """The allowed origins of ``path``; None where CORS does not apply."""
        gateway = tuple(self.runtime.config.gateway.cors.allow_origins)
        if path in OWN_URLS:
            return gateway
        if path.startswith(RESERVED_PREFIXES):  # the management API and the portal too
            return None
        resolved = self.runtime.catalog.resolve(path)
        if resolved is not None and resolved[0].api.cors is not None:
            return tuple(resolved[0].api.cors.allow_origins)
        return gateway

    def simple_headers(
        self, path: str, origin: str, headers: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        """``headers`` of a 200 on ``path`` to a GET from ``origin`` with what the middleware
        adds (Starlette's ``CORSMiddleware.send``), for an answer written past it
        (gateway/sse_express.py)."""
        origins = self.origins(path)
        if origins is None:
            return headers
        policy = self._policy(origins)
        out = MutableHeaders(raw=list(headers))
        out.update(policy.simple_headers)
        if (policy.allow_all_origins and policy.allow_credentials) or (
            not policy.allow_all_origins and policy.is_allowed_origin(origin)
        ):
            policy.allow_explicit_origin(out, origin)
        else:
            out["Vary"] = ", ".join([*out.getlist("Vary"), "Origin"])
        return out.raw

    def _policy(self, origins: tuple[str, ...]) -> _Policy:
        policy = self._policies.get(origins)
        if policy is None:
            policy = self._policies[origins] = _Policy(self.app, origins)
        return policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        origins = self.origins(scope["path"])
        origin = Headers(scope=scope).get("origin")
        if origins is None or origin is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await self._policy(origins)(scope, receive, send)
        elif origins and not self._policy(origins).is_allowed_origin(origin):
            await _refuse_handshake(scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def _refuse_handshake(scope: Scope, receive: Receive, send: Send) -> None:
    websocket = WebSocket(scope, receive, send)
    if "websocket.http.response" in scope.get("extensions", {}):
        refusal = problem(403, "this origin may not open WebSockets here", code="cors_refused")
        await websocket.send_denial_response(refusal)
    else:
        await websocket.close(code=1008, reason="origin not allowed")

"""The developer portal and publisher console at /portal/ (CONTRACT §12).

One page (``static/index.html``) and its script and style, shipped in the package and
loading nothing from other hosts, under a Content-Security-Policy without inline script;
the JSON routes of :mod:`~gateway.portal.developers` and :mod:`~gateway.portal.console`.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.responses import RedirectResponse, Response

from gateway.portal import console, developers
from gateway.portal.sessions import Sessions, SignInLimiter
from gateway.runtime import Runtime

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
ASSETS = {
    "portal.js": "text/javascript",
    "developer.js": "text/javascript",
    "console.js": "text/javascript",
    "portal.css": "text/css",
    "LICENSE.txt": "text/plain",
}


def _asset(name: str) -> bytes:
    return resources.files("gateway.portal").joinpath("static", name).read_bytes()


def router(runtime: Runtime, control: FastAPI) -> APIRouter:
    sessions = Sessions(runtime)
    limiter = SignInLimiter(runtime)
    portal = APIRouter(include_in_schema=False)

    @portal.get("/portal")
    async def to_slash() -> RedirectResponse:
        return RedirectResponse("/portal/", status_code=308)

    @portal.get("/portal/")
    async def page() -> Response:
        return Response(_asset("index.html"), media_type="text/html", headers=PAGE_HEADERS)

    @portal.get("/portal/assets/{name}")
    async def asset(name: str) -> Response:
        if name not in ASSETS:
            raise HTTPException(404, f"no asset {name}")
        return Response(_asset(name), media_type=ASSETS[name], headers=PAGE_HEADERS)

    portal.include_router(developers.router(runtime, sessions, limiter))
    portal.include_router(console.router(runtime, control, sessions, limiter))
    portal.include_router(console.accounts_router(runtime))
    return portal

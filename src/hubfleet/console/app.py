"""The HTTP app served by the daemon (and by `hubfleet console`): /metrics for Prometheus, the web
console's pages, and its JSON API under /api (OpenAPI document at /api/openapi.json)."""

from __future__ import annotations

from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hubfleet import __version__
from hubfleet.config.fleet import FleetConfig
from hubfleet.console import api, auth_routes, costs_routes, events_routes, pages, support_routes
from hubfleet.console.access import Principal, require_operator
from hubfleet.console.data.source import ConsoleSource
from hubfleet.console.web import STATIC_DIR, ConsoleState, SignInRequired, api_principal, login_url, render
from hubfleet.monitor.metrics import MetricsEndpoint
from hubfleet.store.api import Store

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format every Prometheus 2.x and 3.x reads (our metric names need nothing newer)."""
PLOTLY_JS = Path(find_spec("plotly").origin or "").parent / "package_data" / "plotly.min.js"  # type: ignore[union-attr]
"""plotly.js as the `plotly` package ships it (found without importing plotly: 60 ms saved at start)."""
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # everything is served from here: no CDN, no inline script, no framing
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
}


def create_app(
    store: Store,
    fleet: FleetConfig | Callable[[], FleetConfig],
    *,
    state_dir: Path | None = None,
    secrets: Any = None,
    public_url: str | None = None,
    metrics_cache_seconds: float = 5.0,
) -> FastAPI:
    """The app over `store` and `fleet` (a FleetConfig, or a callable returning the current one)."""
    source = ConsoleSource(store, fleet, state_dir)
    app = FastAPI(
        title=f"hubfleet console API ({source.fleet.settings.name})",
        version=__version__,
        description="Read the fleet's hubs, usage, incidents and deployments; run checks. Authenticate with "
        "`Authorization: Bearer hf_...` (create a token on the console's Tokens page or with "
        "`hubfleet console-token create USER`). Community leaders see only their communities' hubs.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.console = ConsoleState(source, public_url=public_url, secrets=secrets)
    # /metrics keeps the fleet the app started with: its series are what the daemon runs
    metrics = MetricsEndpoint(store, source.fleet, cache_seconds=metrics_cache_seconds)

    @app.get("/metrics", include_in_schema=False)
    async def get_metrics(principal: Annotated[Principal, Depends(api_principal)]) -> Response:
        # Every community's figures: an operator's API token (Prometheus: `authorization` with a
        # credentials_file), never anonymous, since any notebook on this machine can reach the port.
        require_operator(principal)
        # A few grouped queries on the store: fast enough to run on the loop, and cached for a few seconds.
        return Response(content=metrics.render(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/static/plotly.min.js", include_in_schema=False)
    async def plotly_js() -> Response:
        return FileResponse(
            PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"}
        )

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(auth_routes.router)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(events_routes.api)  # /events pages and /api/events
    app.include_router(events_routes.pages)
    app.include_router(costs_routes.api)  # /costs pages, /api/costs, invoices
    app.include_router(costs_routes.pages)
    app.include_router(support_routes.api)  # /tickets pages, /api/tickets, the requester's /help/ pages
    app.include_router(support_routes.pages)
    _install_error_handlers(app)
    app.add_middleware(SecurityHeaders)
    return app


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response, and `Cache-Control: no-store` to every answer but the static
    files (pages and API answers show what only the signed-in person may see; sign-in pages carry tokens),
    unless a route set its own. Plain ASGI: starlette's BaseHTTPMiddleware would cost a task and a stream
    per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        no_store = not scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers.setdefault(key, value)
                if no_store:
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", "")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, exc: SignInRequired) -> Response:
        return RedirectResponse(login_url(exc.next_url), status_code=303)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException too (a subclass)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        return render(
            request, "error.html", {"status": exc.status_code, "message": exc.detail}, exc.status_code
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            f"{'.'.join(str(p) for p in error['loc'][1:]) or error['loc'][0]}: {error['msg']}"
            for error in exc.errors()
        ]
        if _wants_json(request):
            return JSONResponse({"detail": "; ".join(problems), "errors": problems}, status_code=422)
        return render(request, "error.html", {"status": 400, "message": "; ".join(problems)}, 400)

"""The FastAPI app served by the daemon: GET /metrics (Prometheus). The web console adds its routes here."""

from __future__ import annotations

from fastapi import FastAPI, Response

from hubfleet import __version__
from hubfleet.config.fleet import FleetConfig
from hubfleet.monitor.metrics import MetricsEndpoint
from hubfleet.store.api import Store

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format every Prometheus 2.x and 3.x reads (our metric names need nothing newer)."""


def create_app(store: Store, fleet: FleetConfig, *, metrics_cache_seconds: float = 5.0) -> FastAPI:
    """The daemon's HTTP app over `store` and `fleet` (kept in app.state for route modules)."""
    app = FastAPI(
        title=f"hubfleet ({fleet.fleet.name})",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.store = store
    app.state.fleet = fleet
    metrics = MetricsEndpoint(store, fleet, cache_seconds=metrics_cache_seconds)
    app.state.metrics = metrics

    @app.get("/metrics", include_in_schema=False)
    async def get_metrics() -> Response:
        # A few grouped queries on the store: fast enough to run on the loop, and cached for a few seconds.
        return Response(content=metrics.render(), media_type=METRICS_CONTENT_TYPE)

    return app

"""Control-plane store: deployments, restarts and synthetic check results (SQLAlchemy 2 + Alembic)."""

from hubfleet.store.api import (
    CheckRecord,
    DeploymentRecord,
    Event,
    RestartRecord,
    Store,
    open_store,
)

__all__ = ["CheckRecord", "DeploymentRecord", "Event", "RestartRecord", "Store", "open_store"]

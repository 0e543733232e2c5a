"""Control-plane store: deployments, restarts, limit events of user servers and synthetic check results
(SQLAlchemy 2 + Alembic)."""

from hubfleet.store.api import (
    CheckRecord,
    DeploymentRecord,
    Event,
    LimitEventRecord,
    RestartRecord,
    Store,
    open_store,
)
from hubfleet.store.safety import StoreDamaged

__all__ = [
    "CheckRecord",
    "DeploymentRecord",
    "Event",
    "LimitEventRecord",
    "RestartRecord",
    "Store",
    "StoreDamaged",
    "open_store",
]

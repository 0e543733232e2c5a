"""What a deployment remembers about a hub, so that the next plan can say what changed and why."""

from __future__ import annotations

from typing import Any

import jupyterhub

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.render.common import effective_admins
from hubfleet.store.api import DeploymentRecord, DeploymentResult, Store


def source_files(fleet: FleetConfig, hub: Hub) -> list[str]:
    """The fleet files a hub is built from (relative to the fleet), for --changed-files and --since."""
    files = [
        "fleet.yaml",
        str(fleet.hub_files.get(hub.name, "")),
        fleet.cluster_files.get(hub.cluster, ""),
        fleet.community_files.get(hub.community, ""),
        f"communities/{hub.community}/secrets/{hub.name}.yaml",
    ]
    return [f for f in files if f]


def settings_snapshot(fleet: FleetConfig, hub: Hub) -> dict[str, Any]:
    """The inputs of a hub's rendering as plain data, secrets masked (pydantic dumps SecretStr as ***)."""
    return {
        "hub": hub.model_dump(mode="json", exclude_defaults=False),
        "cluster": fleet.clusters[hub.cluster].model_dump(mode="json"),
        "admins": effective_admins(fleet, hub) if hub.auth else [],
        "jupyterhub": jupyterhub.__version__,
        "files": source_files(fleet, hub),
    }


def record(
    store: Store,
    fleet: FleetConfig,
    hub: Hub,
    *,
    config_hash: str,
    rendered: str,
    result: DeploymentResult,
    message: str = "",
    actor: str = "",
    reasons: list[str] | None = None,
    commit: str | None = None,
) -> DeploymentRecord:
    return store.record_deployment(
        hub.name,
        config_hash,
        result,
        message=message,
        actor=actor,
        community=hub.community,
        stage=hub.stage,
        rendered=rendered,
        settings=settings_snapshot(fleet, hub),
        reasons=reasons,
        commit=commit,
    )

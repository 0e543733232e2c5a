"""One backend module per cluster kind, all on backends.base.Backend."""

from __future__ import annotations

import importlib
from pathlib import Path

from hubfleet.backends.base import Backend
from hubfleet.config.fleet import FleetConfig

BACKEND_CLASSES = {
    "local": "hubfleet.backends.local:LocalBackend",
    "kubernetes": "hubfleet.backends.kubernetes:KubernetesBackend",
}


def backends_for(fleet: FleetConfig, state_dir: Path) -> dict[str, Backend]:
    """One backend instance per cluster kind used by the fleet (imported only when used)."""
    found: dict[str, Backend] = {}
    for kind in sorted({cluster.kind for cluster in fleet.clusters.values()}):
        module, _, name = BACKEND_CLASSES[kind].partition(":")
        found[kind] = getattr(importlib.import_module(module), name)(fleet, state_dir)
    return found

"""The Clusters page's read model (operators only): the inventory of every Kubernetes cluster from its latest
stored version reading, the upgrade plan to the newest version in standard support built from that reading
(no live call: the page never runs a cloud CLI), and the upgrade runs with each step's hub interruption as
the prober saw it."""

from __future__ import annotations

from typing import Any

from hubfleet.clock import utcnow
from hubfleet.clusters.inventory import build_inventory, latest_versions
from hubfleet.clusters.upgrade import run_json
from hubfleet.clusters.upgrade_plan import build_plan, default_target
from hubfleet.config.models import KubernetesCluster
from hubfleet.console.data.source import ConsoleSource
from hubfleet.settings import UserError
from hubfleet.store import upgrades

RECENT_RUNS = 5


def clusters_page(source: ConsoleSource) -> dict[str, Any]:
    fleet, store = source.fleet, source.store
    today = utcnow().date()
    inventory = build_inventory(fleet, store, today=today)
    plans: dict[str, dict[str, Any]] = {}
    for row in inventory.rows:
        cluster = fleet.clusters.get(row.cluster)
        versions = latest_versions(store, row.cluster)
        if not isinstance(cluster, KubernetesCluster) or versions is None:
            continue
        try:
            target = default_target(inventory.calendar, cluster.credentials.provider, today)
            plan = build_plan(fleet, cluster, versions, target, chart_table=inventory.chart_table)
        except UserError as exc:
            plans[row.cluster] = {"error": str(exc)}
            continue
        plans[row.cluster] = plan.to_json()
    runs = [run_json(store, fleet, run) for run in upgrades.runs(store, limit=RECENT_RUNS * 4)]
    open_runs = [r for r in runs if r["status"] in ("running", "failed")]
    recent = [r for r in runs if r["status"] not in ("running", "failed")][:RECENT_RUNS]
    return {
        "inventory": inventory.to_json(),
        "rows": [row.to_json() for row in inventory.rows],
        "plans": plans,
        "open_runs": open_runs,
        "recent_runs": recent,
    }

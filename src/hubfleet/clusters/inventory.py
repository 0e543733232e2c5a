"""The inventory of Kubernetes clusters: stored version readings joined with the release calendar, the chart
table and the fleet, with what needs an operator's attention spelled out as warnings.

The readings live in the store (`record_versions` / `latest_versions`) so that `hubfleet clusters`, the
console's Clusters page and upgrade plans can show versions without logging in to three clouds each time;
`hubfleet clusters --refresh` reads them again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select

from hubfleet.clock import as_utc, utcnow
from hubfleet.clusters.calendar import (
    HOURS_PER_MONTH,
    Calendar,
    ChartTable,
    load_calendar,
    load_chart_table,
    minor_number,
)
from hubfleet.clusters.versions import ClusterVersions, kubernetes_cluster_names, region_of
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import KubernetesCluster
from hubfleet.store.api import Store
from hubfleet.store.models import ClusterVersionReading

MAX_NODE_SKEW = 3
"""Kubernetes' version-skew policy: kubelets may be up to three minors older than the API server."""
SUPPORT_ENDS_SOON_DAYS = 90
READING_OLD_DAYS = 30


# --------------------------------------------------------------------------- store


def record_versions(store: Store, versions: ClusterVersions) -> None:
    """Keep one reading (every reading is kept: the history shows when a cluster changed version)."""
    with store.session() as session, session.begin():
        session.add(
            ClusterVersionReading(
                cluster=versions.cluster,
                read_at=as_utc(versions.read_at),
                provider=versions.provider,
                region=versions.region,
                control_plane=versions.control_plane,
                control_plane_version=versions.control_plane_version,
                node_pools=dict(versions.node_pools),
                chart_versions=dict(versions.chart_versions),
            )
        )


def _versions(row: ClusterVersionReading) -> ClusterVersions:
    return ClusterVersions(
        cluster=row.cluster,
        provider=row.provider,
        region=row.region,
        control_plane=row.control_plane,
        node_pools={str(k): str(v) for k, v in (row.node_pools or {}).items()},
        chart_versions={str(k): str(v) for k, v in (row.chart_versions or {}).items()},
        read_at=as_utc(row.read_at),
        control_plane_version=row.control_plane_version,
    )


def latest_versions(store: Store, cluster: str) -> ClusterVersions | None:
    """The newest reading of `cluster`, None when it was never read."""
    with store.session() as session:
        row = session.scalars(
            select(ClusterVersionReading)
            .where(ClusterVersionReading.cluster == cluster)
            .order_by(ClusterVersionReading.read_at.desc(), ClusterVersionReading.id.desc())
            .limit(1)
        ).first()
        return _versions(row) if row is not None else None


def version_history(store: Store, cluster: str, limit: int = 50) -> list[ClusterVersions]:
    """Readings of `cluster`, newest first."""
    with store.session() as session:
        rows = session.scalars(
            select(ClusterVersionReading)
            .where(ClusterVersionReading.cluster == cluster)
            .order_by(ClusterVersionReading.read_at.desc(), ClusterVersionReading.id.desc())
            .limit(limit)
        ).all()
        return [_versions(row) for row in rows]


# --------------------------------------------------------------------------- inventory rows


@dataclass
class InventoryRow:
    cluster: str
    provider: str
    region: str
    chart_version: str
    """The chart version the cluster file pins (what the next deploy installs)."""
    hubs: list[str]
    """Hubs of the fleet on this cluster."""
    control_plane: str | None = None
    control_plane_version: str = ""
    node_pools: dict[str, str] = field(default_factory=dict)
    chart_versions: dict[str, str] = field(default_factory=dict)
    """Hub -> chart version helm reported at the last reading."""
    read_at: datetime | None = None
    support: str = "unknown"
    """standard | extended | ended (past extended support) | unknown (not in the calendar, never read)
    | none (a kubeconfig cluster: no provider calendar)."""
    end_of_standard: date | None = None
    days_left: int | None = None
    """Days until the end of standard support; negative once it has passed."""
    end_of_extended: date | None = None
    extra_monthly_cost: float | None = None
    """USD a month on top of standard support while the control plane is in extended support."""
    warnings: list[str] = field(default_factory=list)

    @property
    def hub_count(self) -> int:
        return len(self.hubs)

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "provider": self.provider,
            "region": self.region,
            "control_plane": self.control_plane,
            "control_plane_version": self.control_plane_version,
            "node_pools": dict(self.node_pools),
            "chart_version": self.chart_version,
            "chart_versions": dict(self.chart_versions),
            "hub_count": self.hub_count,
            "hubs": list(self.hubs),
            "read_at": as_utc(self.read_at).isoformat() if self.read_at else None,
            "support": self.support,
            "end_of_standard": self.end_of_standard.isoformat() if self.end_of_standard else None,
            "days_left": self.days_left,
            "end_of_extended": self.end_of_extended.isoformat() if self.end_of_extended else None,
            "extra_monthly_cost": self.extra_monthly_cost,
            "warnings": list(self.warnings),
        }


@dataclass
class Inventory:
    today: date
    calendar: Calendar
    chart_table: ChartTable
    rows: list[InventoryRow]
    warnings: list[str]
    """Fleet-wide: a calendar or chart table older than six months."""

    def row(self, cluster: str) -> InventoryRow | None:
        return next((r for r in self.rows if r.cluster == cluster), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "today": self.today.isoformat(),
            "calendar": {
                "path": str(self.calendar.path),
                "compiled": self.calendar.compiled.isoformat(),
                "stale": self.calendar.is_stale(self.today),
            },
            "chart_table": {
                "path": str(self.chart_table.path),
                "compiled": self.chart_table.compiled.isoformat(),
                "stale": self.chart_table.is_stale(self.today),
            },
            "clusters": [row.to_json() for row in self.rows],
            "warnings": list(self.warnings),
        }


def table_warnings(calendar: Calendar, chart_table: ChartTable, today: date) -> list[str]:
    warnings = []
    if calendar.is_stale(today):
        warnings.append(
            f"the release calendar ({calendar.path}) was compiled on {calendar.compiled}, more than six "
            "months ago: support dates and prices may have changed; check the providers' pages and pass an "
            "updated copy with --calendar FILE (or upgrade hubfleet)"
        )
    if chart_table.is_stale(today):
        warnings.append(
            f"the chart table ({chart_table.path}) was compiled on {chart_table.compiled}, more than six "
            "months ago: newer z2jh charts may exist; pass an updated copy with --chart-table FILE (or "
            "upgrade hubfleet)"
        )
    return warnings


def inventory_row(
    cluster: KubernetesCluster,
    hubs: list[str],
    versions: ClusterVersions | None,
    calendar: Calendar,
    chart_table: ChartTable,
    today: date,
) -> InventoryRow:
    provider = cluster.credentials.provider
    row = InventoryRow(
        cluster=cluster.name,
        provider=provider,
        region=region_of(cluster),
        chart_version=cluster.chart_version,
        hubs=sorted(hubs),
        support="none" if provider == "kubeconfig" else "unknown",
    )
    _chart_warnings(row, cluster.chart_version, "the cluster file pins", None, chart_table)
    if versions is None:
        row.warnings.append(
            f"versions never read: run `hubfleet clusters --refresh` (reads {cluster.name} through "
            f"{'kubectl' if provider == 'kubeconfig' else 'kubectl and the ' + provider + ' CLI'})"
        )
        return row
    row.region = versions.region or row.region
    row.control_plane = versions.control_plane
    row.control_plane_version = versions.control_plane_version
    row.node_pools = dict(versions.node_pools)
    row.chart_versions = dict(versions.chart_versions)
    row.read_at = versions.read_at
    age = (today - as_utc(versions.read_at).date()).days
    if age > READING_OLD_DAYS:
        row.warnings.append(f"versions were read {age} days ago: run `hubfleet clusters --refresh`")
    _support(row, calendar, today)
    _skew_warnings(row)
    for hub, chart in sorted(versions.chart_versions.items()):
        _chart_warnings(row, chart, f"hub {hub} runs", versions.control_plane, chart_table)
        if chart != cluster.chart_version and hub in hubs:
            row.warnings.append(
                f"hub {hub} runs chart {chart} but the cluster file pins {cluster.chart_version}: "
                f"`hubfleet deploy {hub}` brings it to {cluster.chart_version}"
            )
    _chart_warnings(row, cluster.chart_version, "the cluster file pins", versions.control_plane, chart_table)
    missing = sorted(set(hubs) - set(versions.chart_versions))
    if missing:
        row.warnings.append(
            f"no jupyterhub helm release found for hub(s) {', '.join(missing)} at the last reading "
            "(not deployed yet, or deployed under another name)"
        )
    return row


def _support(row: InventoryRow, calendar: Calendar, today: date) -> None:
    if row.provider == "kubeconfig" or not row.control_plane:
        return
    release = calendar.minor(row.provider, row.control_plane)
    if release is None:
        known = [m.version for m in calendar.minors(row.provider)]
        span = f"{known[0]}-{known[-1]}" if known else "none"
        row.warnings.append(
            f"Kubernetes {row.control_plane} is not in the {row.provider} release calendar (it has {span}; "
            f"compiled {calendar.compiled}): its end of support is unknown; pass an updated --calendar FILE"
        )
        return
    row.end_of_standard = release.end_of_standard
    row.end_of_extended = release.end_of_extended
    row.days_left = (release.end_of_standard - today).days
    if today <= release.end_of_standard:
        row.support = "standard"
        if row.days_left <= SUPPORT_ENDS_SOON_DAYS:
            row.warnings.append(
                f"standard support for {row.control_plane} ends on {release.end_of_standard} "
                f"({row.days_left} days): plan the upgrade (`hubfleet upgrade-plan {row.cluster}`)"
            )
        return
    if release.end_of_extended is not None and today > release.end_of_extended:
        row.support = "ended"
        row.warnings.append(
            f"{row.control_plane} is past the end of extended support ({release.end_of_extended}): the "
            f"provider no longer supports it and may upgrade the control plane at any time; upgrade now "
            f"(`hubfleet upgrade-plan {row.cluster}`)"
        )
        return
    if release.end_of_extended is None:
        row.support = "ended"
        row.warnings.append(
            f"{row.control_plane} is past the end of standard support ({release.end_of_standard}) and the "
            f"calendar records no extended support for it: upgrade (`hubfleet upgrade-plan {row.cluster}`)"
        )
        return
    row.support = "extended"
    if release.extended_cost_per_hour is not None:
        row.extra_monthly_cost = round(release.extended_cost_per_hour * HOURS_PER_MONTH, 2)
    cost = f", about ${row.extra_monthly_cost:,.2f} a month extra" if row.extra_monthly_cost else ""
    entry = calendar.providers.get(row.provider)
    note = f" ({entry.note.rstrip('.')})" if entry and entry.note else ""
    row.warnings.append(
        f"{row.control_plane} is in paid extended support since {release.end_of_standard} (until "
        f"{release.end_of_extended}){cost}: upgrade to stop paying (`hubfleet upgrade-plan {row.cluster}`)"
        f"{note}"
    )


def _skew_warnings(row: InventoryRow) -> None:
    if not row.control_plane:
        return
    plane = minor_number(row.control_plane)
    for pool, version in sorted(row.node_pools.items()):
        behind = plane - minor_number(version)
        if behind > MAX_NODE_SKEW:
            row.warnings.append(
                f"node pool {pool} is at {version}, {behind} minor versions behind the control plane "
                f"({row.control_plane}); the skew policy allows {MAX_NODE_SKEW}: upgrade the node pool first"
            )
        elif behind < 0:
            row.warnings.append(
                f"node pool {pool} is at {version}, newer than the control plane ({row.control_plane}): "
                "the skew policy forbids kubelets newer than the API server"
            )


def _chart_warnings(
    row: InventoryRow, chart: str, who: str, control_plane: str | None, chart_table: ChartTable
) -> None:
    entry = chart_table.get(chart)
    if entry is None:
        message = (
            f"{who} chart {chart}, which is not in the chart table (compiled {chart_table.compiled}): its "
            "supported Kubernetes versions are unknown; pass an updated --chart-table FILE"
        )
    elif control_plane is not None and not entry.supports(control_plane):
        span = f"{entry.kube_min} to {entry.kube_max}" if entry.kube_max else f"{entry.kube_min} and later"
        message = (
            f"{who} chart {chart}, which supports Kubernetes {span} "
            f"(kubeVersion {entry.kube_version or '?'}), not the control plane's {control_plane}"
        )
    else:
        return
    if message not in row.warnings:
        row.warnings.append(message)


def build_inventory(
    fleet: FleetConfig,
    store: Store | None,
    *,
    calendar: Calendar | None = None,
    chart_table: ChartTable | None = None,
    readings: dict[str, ClusterVersions] | None = None,
    today: date | None = None,
) -> Inventory:
    """Every Kubernetes cluster of the fleet with its latest stored reading (or `readings`, which win)."""
    calendar = calendar or load_calendar()
    chart_table = chart_table or load_chart_table()
    today = today or utcnow().date()
    readings = dict(readings or {})
    rows = []
    for name in kubernetes_cluster_names(fleet):
        cluster = fleet.clusters[name]
        assert isinstance(cluster, KubernetesCluster)
        hubs = [hub.name for hub in fleet.hubs.values() if hub.cluster == name]
        versions = readings.get(name)
        if versions is None and store is not None:
            versions = latest_versions(store, name)
        rows.append(inventory_row(cluster, hubs, versions, calendar, chart_table, today))
    return Inventory(today, calendar, chart_table, rows, table_warnings(calendar, chart_table, today))

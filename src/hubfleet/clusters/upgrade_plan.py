"""`hubfleet upgrade-plan`: from a cluster's current versions to a target minor version, the steps that keep
to the version-skew policy, the provider's commands for each, the chart version that supports the target,
the hubs whose rendered manifests use an API version removed on the way, and a notice per community.

Plain data in, plain data out: the live reads (versions, helm) happen in `plan_for_cluster`; `build_plan`
is a pure function of what was read, so the tests can give it any cluster state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from hubfleet.clusters.calendar import Calendar, ChartTable
from hubfleet.clusters.removed_apis import (
    Finding,
    RemovedApiTable,
    load_removed_apis,
    manifest_objects,
    minor_key,
    minor_of,
    scan,
)
from hubfleet.clusters.skew import KUBERNETES_MAX_NODE_SKEW, MAX_NODE_SKEW, VersionStep, skew_steps
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import (
    AWSCredentials,
    AzureCredentials,
    GCPCredentials,
    Hub,
    KubernetesCluster,
)
from hubfleet.settings import UserError

CONTROL_PLANE_INTERRUPTION = (
    "no restart of user servers: the provider replaces the managed control plane while nodes and pods keep "
    "running; for a few minutes the hub may fail to start or stop servers (the Kubernetes API can be briefly "
    "unreachable, on zonal GKE clusters for the whole step)"
)
NODE_POOL_INTERRUPTION = (
    "rolling node replacement: every user server on the pool is stopped (its pod is evicted; unsaved work in "
    "kernels is lost, files in home volumes stay) and users start it again; the hub and proxy pods move to "
    "new nodes, a short outage of the hub (usually under a minute) each time they move"
)


class VersionsLike(Protocol):
    """clusters.versions.ClusterVersions (C1): what the planner reads of it."""

    cluster: str
    provider: str
    control_plane: str
    node_pools: dict[str, str]


@dataclass(frozen=True)
class PlanStep:
    number: int
    step: VersionStep
    commands: list[list[str]]
    """The provider CLI commands, in order (empty: the cluster's provider has none; upgrade by hand)."""
    interruption: str

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "kind": self.step.kind,
            "pool": self.step.pool,
            "from": self.step.from_version,
            "to": self.step.version,
            "description": self.step.describe(),
            "commands": self.commands,
            "interruption": self.interruption,
        }


@dataclass(frozen=True)
class HubScan:
    hub: str
    community: str
    scanned: bool
    objects: int = 0
    findings: tuple[Finding, ...] = ()
    note: str = ""
    """Why it was not scanned, or helm's complaint (a chart that refuses the target's kubeVersion)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "hub": self.hub,
            "community": self.community,
            "scanned": self.scanned,
            "objects": self.objects,
            "findings": [
                {
                    "kind": f.object.kind,
                    "name": f.object.name,
                    "api_version": f.object.api_version,
                    "removed_in": f.removed.removed_in,
                    "replacement": f.removed.replacement,
                    "source": f.object.source,
                }
                for f in self.findings
            ],
            "note": self.note,
        }


@dataclass(frozen=True)
class ChartAdvice:
    current: str
    supports_target: bool | None
    """None: the chart table does not know the current chart version."""
    recommended: str | None
    """The newest chart version the table lists as supporting the target."""
    table_compiled: date | None

    def describe(self, target: str) -> str:
        if self.supports_target:
            return f"chart {self.current} supports Kubernetes {target}"
        rec = f"; move the cluster's chart_version to {self.recommended} first" if self.recommended else ""
        if self.supports_target is None:
            return f"chart {self.current} is not in the chart table, support of {target} unknown{rec}"
        return f"chart {self.current} does not support Kubernetes {target}{rec}"

    def to_json(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "supports_target": self.supports_target,
            "recommended": self.recommended,
            "table_compiled": self.table_compiled.isoformat() if self.table_compiled else None,
        }


@dataclass(frozen=True)
class Notice:
    community: str
    contacts: list[str]
    """`Name <email>` of each contact of the community."""
    hubs: list[str]
    text: str


@dataclass
class UpgradePlan:
    cluster: str
    provider: str
    control_plane: str
    node_pools: dict[str, str]
    target: str
    max_node_skew: int
    steps: list[PlanStep]
    chart: ChartAdvice
    scans: list[HubScan] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    crossed: list[str] = field(default_factory=list)
    """The minor versions the control plane passes through after the current one, target included."""
    warnings: list[str] = field(default_factory=list)
    installed_charts: list[str] = field(default_factory=list)
    """Hubs whose installed chart (as helm reported it) does not support the target."""

    @property
    def blocked(self) -> list[str]:
        """What to fix before running the plan: removed APIs in use, a chart that refuses the target."""
        reasons = [f"hub {s.hub}: {f.describe()}" for s in self.scans for f in s.findings]
        if self.chart.supports_target is False:
            reasons.append(self.chart.describe(self.target))
        return reasons + self.installed_charts

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "provider": self.provider,
            "current": {"control_plane": self.control_plane, "node_pools": self.node_pools},
            "target": self.target,
            "max_node_skew": self.max_node_skew,
            "crossed": self.crossed,
            "steps": [step.to_json() for step in self.steps],
            "chart": self.chart.to_json(),
            "scans": [scan.to_json() for scan in self.scans],
            "blocked": self.blocked,
            "notices": [
                {"community": n.community, "contacts": n.contacts, "hubs": n.hubs, "text": n.text}
                for n in self.notices
            ],
            "warnings": self.warnings,
        }


# --------------------------------------------------------------------------- provider commands


def step_commands(cluster: KubernetesCluster, step: VersionStep) -> list[list[str]]:
    """The provider CLI commands of one step (argv lists, run without a shell). The CLIs accept a minor
    version and pick its newest patch: gcloud's version aliases ("1.33"), EKS versions are minors, AKS picks
    the latest GA patch when given MAJOR.MINOR."""
    creds = cluster.credentials
    v = step.version
    if isinstance(creds, GCPCredentials):
        where = ["--zone", creds.zone, "--project", creds.project, "--quiet"]
        if step.kind == "control_plane":
            return [
                [
                    "gcloud",
                    "container",
                    "clusters",
                    "upgrade",
                    creds.cluster,
                    "--master",
                    "--cluster-version",
                    v,
                    *where,
                ]
            ]
        return [
            ["gcloud", "container", "clusters", "upgrade", creds.cluster, "--node-pool", str(step.pool),
             "--cluster-version", v, *where]
        ]  # fmt: skip
    if isinstance(creds, AWSCredentials):
        # EKS updates are asynchronous: `aws eks wait` blocks until the cluster or node group is ACTIVE.
        if step.kind == "control_plane":
            return [
                ["aws", "eks", "update-cluster-version", "--name", creds.cluster, "--kubernetes-version", v,
                 "--region", creds.region],
                ["aws", "eks", "wait", "cluster-active", "--name", creds.cluster, "--region", creds.region],
            ]  # fmt: skip
        return [
            ["aws", "eks", "update-nodegroup-version", "--cluster-name", creds.cluster, "--nodegroup-name",
             str(step.pool), "--kubernetes-version", v, "--region", creds.region],
            ["aws", "eks", "wait", "nodegroup-active", "--cluster-name", creds.cluster, "--nodegroup-name",
             str(step.pool), "--region", creds.region],
        ]  # fmt: skip
    if isinstance(creds, AzureCredentials):
        if step.kind == "control_plane":
            return [
                ["az", "aks", "upgrade", "--resource-group", creds.resource_group, "--name", creds.cluster,
                 "--kubernetes-version", v, "--control-plane-only", "--yes"]
            ]  # fmt: skip
        return [
            ["az", "aks", "nodepool", "upgrade", "--resource-group", creds.resource_group, "--cluster-name",
             creds.cluster, "--name", str(step.pool), "--kubernetes-version", v, "--yes"]
        ]  # fmt: skip
    return []


# --------------------------------------------------------------------------- the plan


def default_target(calendar: Calendar, provider: str, today: date) -> str:
    """The newest minor the provider's calendar has in standard support today."""
    supported = [m for m in calendar.minors(provider) if m.released <= today <= m.end_of_standard]
    if not supported:
        raise UserError(
            f"the release calendar has no {provider} version in standard support on {today}; "
            "give the target with --to, or a newer calendar with --calendar FILE"
        )
    return max((m.version for m in supported), key=minor_key)


def chart_advice(cluster: KubernetesCluster, chart_table: ChartTable, target: str) -> ChartAdvice:
    """Whether the cluster's chart version supports `target` (the chart table's kube_min/kube_max, from each
    chart's `kubeVersion`), and the newest chart version that does."""
    current = chart_table.get(cluster.chart_version)
    supporting = [v.version for v in chart_table.supporting(target)]
    return ChartAdvice(
        current=cluster.chart_version,
        supports_target=None if current is None else current.supports(target),
        recommended=max(supporting, key=_semver, default=None),
        table_compiled=chart_table.compiled,
    )


def _semver(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for part in version.split("-")[0].split("."):
        parts.append(int(part) if part.isdigit() else 0)
    return tuple(parts)


def build_plan(
    fleet: FleetConfig,
    cluster: KubernetesCluster,
    versions: VersionsLike,
    target: str,
    *,
    chart_table: ChartTable,
    scanner: Callable[[Hub, str], HubScan] | None = None,
    window: str = "",
) -> UpgradePlan:
    """The plan for `cluster` from `versions` to `target`; `scanner(hub, target)` renders and scans one hub
    (None: hubs are listed as not scanned)."""
    target = minor_of(target)
    provider = cluster.credentials.provider
    max_skew = MAX_NODE_SKEW.get(provider, KUBERNETES_MAX_NODE_SKEW)
    steps = skew_steps(versions.control_plane, dict(versions.node_pools), target, max_node_skew=max_skew)
    plan_steps = [
        PlanStep(
            n + 1,
            step,
            step_commands(cluster, step),
            CONTROL_PLANE_INTERRUPTION if step.kind == "control_plane" else NODE_POOL_INTERRUPTION,
        )
        for n, step in enumerate(steps)
    ]
    current = minor_key(versions.control_plane)
    crossed = [f"{current[0]}.{m}" for m in range(current[1] + 1, minor_key(target)[1] + 1)]
    plan = UpgradePlan(
        cluster=cluster.name,
        provider=provider,
        control_plane=minor_of(versions.control_plane),
        node_pools={k: minor_of(v) for k, v in sorted(versions.node_pools.items())},
        target=target,
        max_node_skew=max_skew,
        steps=plan_steps,
        chart=chart_advice(cluster, chart_table, target),
        crossed=crossed,
    )
    if provider == "kubeconfig":
        plan.warnings.append(
            f"cluster {cluster.name} is reached through a kubeconfig file: hubfleet knows no provider "
            "command to upgrade it; run the steps with your cluster's own tooling"
        )
    for hub_name, chart in sorted(getattr(versions, "chart_versions", {}).items()):
        installed = chart_table.get(chart)
        if installed is not None and not installed.supports(target):
            plan.installed_charts.append(
                f"hub {hub_name} runs chart {chart} (helm list), which does not support Kubernetes {target}: "
                "deploy it with a chart that does before the upgrade"
            )
    if not steps:
        plan.warnings.append(
            f"cluster {cluster.name} already runs {target} on its control plane and node pools"
        )
    hubs = sorted((h for h in fleet.hubs.values() if h.cluster == cluster.name), key=lambda h: h.name)
    for hub in hubs:
        if scanner is None:
            plan.scans.append(HubScan(hub.name, hub.community, False, note="not scanned (no chart given)"))
        else:
            plan.scans.append(scanner(hub, target))
    plan.notices = notices(fleet, plan, hubs, window)
    return plan


def notices(fleet: FleetConfig, plan: UpgradePlan, hubs: list[Hub], window: str) -> list[Notice]:
    """One maintenance notice per community with a hub on the cluster, for its contacts."""
    by_community: dict[str, list[Hub]] = {}
    for hub in hubs:
        by_community.setdefault(hub.community, []).append(hub)
    pools = sorted({s.step.pool for s in plan.steps if s.step.kind == "node_pool" and s.step.pool})
    control_steps = [s for s in plan.steps if s.step.kind == "control_plane"]
    findings = {s.hub: s.findings for s in plan.scans}
    result: list[Notice] = []
    for name, community_hubs in sorted(by_community.items()):
        community = fleet.communities.get(name)
        contacts = [f"{c.name} <{c.email}>" for c in (community.contacts if community else [])]
        display = community.display_name if community and getattr(community, "display_name", "") else name
        lines = [
            f"Maintenance of the Kubernetes cluster under your hubs ({display}): cluster {plan.cluster} "
            f"goes from Kubernetes {plan.control_plane} to {plan.target}.",
            f"Window: {window or 'to be announced by the operators'}.",
        ]
        if control_steps:
            lines.append(f"Control plane ({len(control_steps)} step(s)): {CONTROL_PLANE_INTERRUPTION}.")
        if pools:
            lines.append(f"Node pools ({', '.join(pools)}): {NODE_POOL_INTERRUPTION}.")
        lines.append("Expected interruption per hub:")
        for hub in community_hubs:
            parts = []
            if control_steps:
                parts.append("no restart during the control-plane steps")
            if pools:
                parts.append("user servers stopped once per node-pool step, hub and proxy down briefly")
            lines.append(f"- {hub.name}: " + ("; ".join(parts) or "none"))
            for finding in findings.get(hub.name, ()):
                lines.append(f"  needs a change first: {finding.describe()}")
        if not contacts:
            lines.append(f"(community {name} lists no contacts in its community.yaml: tell them another way)")
        result.append(Notice(name, contacts, [h.name for h in community_hubs], "\n".join(lines)))
    return result


# --------------------------------------------------------------------------- scanning hubs with helm


def chart_path(charts_dir: Path, version: str) -> Path:
    return charts_dir / f"jupyterhub-{version}.tgz"


def helm_scanner(
    fleet: FleetConfig,
    cluster: KubernetesCluster,
    charts_dir: Path | None,
    removed: RemovedApiTable,
    current: str,
) -> Callable[[Hub, str], HubScan]:
    """Render each hub with `helm template` (the cluster's chart from `charts_dir`, `--kube-version` the
    target, so helm also enforces the chart's kubeVersion) and look for API versions removed between the
    control plane's current version and the target."""
    import tempfile

    from hubfleet.render.chart_check import ChartCheckError, helm_template
    from hubfleet.render.kubernetes import secret_placeholders, to_yaml, values_yaml

    def scanner(hub: Hub, target: str) -> HubScan:
        if charts_dir is None:
            return HubScan(
                hub.name,
                hub.community,
                False,
                note="not scanned: no charts directory (fleet.yaml kubernetes.charts_dir, or --charts DIR)",
            )
        chart = chart_path(charts_dir, cluster.chart_version)
        if not chart.is_file():
            return HubScan(
                hub.name, hub.community, False, note=f"not scanned: chart {chart.name} is not in {charts_dir}"
            )
        with tempfile.TemporaryDirectory(prefix="hubfleet-scan-") as tmp:
            public, placeholders = Path(tmp) / "values.yaml", Path(tmp) / "secret-placeholders.yaml"
            public.write_text(values_yaml(fleet, hub))
            placeholders.write_text(to_yaml(secret_placeholders(fleet, hub)))
            try:
                rendered = helm_template(
                    chart,
                    [public, placeholders],
                    release=hub.name,
                    namespace=hub.name,
                    kube_version=f"{target}.0",
                )
            except ChartCheckError as exc:
                return HubScan(
                    hub.name, hub.community, False, note=f"not scanned: helm template failed: {exc}"
                )
        objects = manifest_objects(rendered)
        found = scan(objects, removed.removed_between(current, target))
        return HubScan(hub.name, hub.community, True, len(objects), tuple(found))

    return scanner


def plan_for_cluster(
    fleet: FleetConfig,
    cluster_name: str,
    target: str | None,
    *,
    today: date,
    calendar_file: Path | None = None,
    chart_table_file: Path | None = None,
    removed_file: Path | None = None,
    charts_dir: Path | None = None,
    window: str = "",
    versions: VersionsLike | None = None,
) -> UpgradePlan:
    """Read the cluster's versions live (unless given) and build its plan."""
    from hubfleet.clusters.calendar import load_calendar, load_chart_table
    from hubfleet.clusters.versions import read_versions

    cluster = kubernetes_cluster(fleet, cluster_name)
    calendar = load_calendar(calendar_file)
    chart_table = load_chart_table(chart_table_file)
    removed = load_removed_apis(removed_file)
    if versions is None:
        versions = read_versions(fleet, cluster_name)
    if charts_dir is None and fleet.settings.kubernetes.charts_dir:
        charts_dir = fleet.file(fleet.settings.kubernetes.charts_dir)
    goal = minor_of(target) if target else default_target(calendar, cluster.credentials.provider, today)
    scanner = helm_scanner(fleet, cluster, charts_dir, removed, minor_of(versions.control_plane))
    plan = build_plan(
        fleet,
        cluster,
        versions,
        goal,
        chart_table=chart_table,
        scanner=scanner,
        window=window,
    )
    if calendar.minor(cluster.credentials.provider, goal) is None:
        plan.warnings.append(f"{goal} is not in the {cluster.credentials.provider} release calendar")
    return plan


def kubernetes_cluster(fleet: FleetConfig, name: str) -> KubernetesCluster:
    cluster = fleet.clusters.get(name)
    if cluster is None:
        known = ", ".join(sorted(n for n, c in fleet.clusters.items() if isinstance(c, KubernetesCluster)))
        raise UserError(f"no cluster named '{name}' in this fleet; kubernetes clusters: {known or 'none'}")
    if not isinstance(cluster, KubernetesCluster):
        raise UserError(f"cluster '{name}' is not a kubernetes cluster: there is nothing to upgrade")
    return cluster

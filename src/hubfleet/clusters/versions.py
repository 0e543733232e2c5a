"""Reading a cluster's Kubernetes versions live: control plane, node pools and the chart of every hub.

Everything goes through the cluster's credentials (`backends.kube_credentials`), as deploys do: the
control plane from `kubectl version -o json`, node pools from the provider's CLI (they know pools that have
no node at the moment; a `kubeconfig` cluster has no provider CLI, so its nodes' kubelet versions are grouped
by their pool label), the hubs' chart versions from `helm list -A -o json`. The commands are plain functions
returning argv lists; the parsers take the JSON the CLIs document and raise a clear error on anything else.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from hubfleet.backends.commands import Runner, require_binaries, run_command
from hubfleet.backends.kube_credentials import LOGIN_HINTS, PROVIDER_BINARIES, cluster_credentials
from hubfleet.clock import as_utc, parse_time, utcnow
from hubfleet.clusters.calendar import minor_of
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import (
    AWSCredentials,
    AzureCredentials,
    GCPCredentials,
    KubernetesCluster,
)
from hubfleet.settings import UserError

CHART_NAME = "jupyterhub"
POOL_LABELS = (
    "cloud.google.com/gke-nodepool",
    "eks.amazonaws.com/nodegroup",
    "kubernetes.azure.com/agentpool",
    "agentpool",
    "karpenter.sh/nodepool",
    "node.kubernetes.io/pool",
)
"""Node labels naming a node's pool, first match wins (GKE, EKS managed node groups, AKS, Karpenter)."""
UNPOOLED = "(no pool label)"
TIMEOUT = 120.0


@dataclass(frozen=True)
class ClusterVersions:
    """One reading of a cluster's versions (minors such as "1.30"; chart versions such as "4.4.0")."""

    cluster: str
    provider: str
    """aws, gcp, azure or kubeconfig."""
    region: str
    """AWS region, GCP zone or region, Azure location; "" for a kubeconfig cluster."""
    control_plane: str
    node_pools: dict[str, str]
    """Pool name -> minor version of its nodes (the oldest one, when a pool's nodes differ)."""
    chart_versions: dict[str, str]
    """Hub (helm release) -> version of its jupyterhub chart."""
    read_at: datetime
    control_plane_version: str = ""
    """As the API server reports it, such as v1.30.4-eks-a737599."""

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "provider": self.provider,
            "region": self.region,
            "control_plane": self.control_plane,
            "control_plane_version": self.control_plane_version,
            "node_pools": dict(self.node_pools),
            "chart_versions": dict(self.chart_versions),
            "read_at": as_utc(self.read_at).isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterVersions:
        read_at = parse_time(data.get("read_at"))
        if read_at is None:
            raise ValueError(f"no read_at in {data!r}")
        return cls(
            cluster=str(data["cluster"]),
            provider=str(data.get("provider", "")),
            region=str(data.get("region", "")),
            control_plane=str(data.get("control_plane", "")),
            node_pools={str(k): str(v) for k, v in (data.get("node_pools") or {}).items()},
            chart_versions={str(k): str(v) for k, v in (data.get("chart_versions") or {}).items()},
            read_at=read_at,
            control_plane_version=str(data.get("control_plane_version", "")),
        )


# --------------------------------------------------------------------------- commands (plain argv lists)


def _ctx(flag: str, context: str | None) -> list[str]:
    return [flag, context] if context else []


def kubectl_version_command(context: str | None) -> list[str]:
    return ["kubectl", "version", "-o", "json", *_ctx("--context", context)]


def kubectl_nodes_command(context: str | None) -> list[str]:
    return ["kubectl", "get", "nodes", "-o", "json", *_ctx("--context", context)]


def helm_list_command(context: str | None) -> list[str]:
    return ["helm", "list", "-A", "-o", "json", *_ctx("--kube-context", context)]


def gke_node_pools_command(creds: GCPCredentials) -> list[str]:
    return [
        "gcloud", "container", "node-pools", "list", "--cluster", creds.cluster,
        "--zone", creds.zone, "--project", creds.project, "--format", "json",
    ]  # fmt: skip


def eks_list_nodegroups_command(creds: AWSCredentials) -> list[str]:
    return [
        "aws", "eks", "list-nodegroups", "--cluster-name", creds.cluster,
        "--region", creds.region, "--output", "json",
    ]  # fmt: skip


def eks_describe_nodegroup_command(creds: AWSCredentials, nodegroup: str) -> list[str]:
    return [
        "aws", "eks", "describe-nodegroup", "--cluster-name", creds.cluster,
        "--nodegroup-name", nodegroup, "--region", creds.region, "--output", "json",
    ]  # fmt: skip


def aks_show_command(creds: AzureCredentials) -> list[str]:
    return [
        "az",
        "aks",
        "show",
        "--resource-group",
        creds.resource_group,
        "--name",
        creds.cluster,
        "-o",
        "json",
    ]


def aks_node_pools_command(creds: AzureCredentials) -> list[str]:
    return [
        "az", "aks", "nodepool", "list", "--resource-group", creds.resource_group,
        "--cluster-name", creds.cluster, "-o", "json",
    ]  # fmt: skip


# --------------------------------------------------------------------------- parsers


class AnswerError(ValueError):
    """A CLI answered with something other than the JSON its documentation shows."""


def _minor(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise AnswerError(f"no {what}")
    try:
        return minor_of(value)
    except ValueError:
        raise AnswerError(f"{what} '{value}' is not a Kubernetes version") from None


def parse_server_version(data: Any) -> tuple[str, str]:
    """(minor, gitVersion) from `kubectl version -o json`: {"serverVersion": {"gitVersion": "v1.30.4"}}."""
    server = data.get("serverVersion") if isinstance(data, dict) else None
    if not isinstance(server, dict):
        raise AnswerError("no serverVersion (the API server did not answer)")
    git = server.get("gitVersion")
    if isinstance(git, str) and git.strip():
        return _minor(git, "serverVersion.gitVersion"), git.strip()
    major, minor = str(server.get("major", "")), str(server.get("minor", "")).rstrip("+")
    if major.isdigit() and minor.isdigit():
        return f"{int(major)}.{int(minor)}", f"v{major}.{minor}"
    raise AnswerError("serverVersion has neither gitVersion nor major/minor")


def parse_gke_node_pools(data: Any) -> dict[str, str]:
    """`gcloud container node-pools list --format json`: [{"name": ..., "version": "1.30.5-gke.1014001"}]."""
    if not isinstance(data, list):
        raise AnswerError("expected a list of node pools")
    pools = {}
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise AnswerError("a node pool without a name")
        version = item.get("version") or (item.get("config") or {}).get("version")
        pools[item["name"]] = _minor(version, f"version of node pool '{item['name']}'")
    return pools


def parse_eks_nodegroups(data: Any) -> list[str]:
    """`aws eks list-nodegroups`: {"nodegroups": ["ng-1", ...]}."""
    groups = data.get("nodegroups") if isinstance(data, dict) else None
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise AnswerError('expected {"nodegroups": [names]}')
    return groups


def parse_eks_nodegroup(data: Any) -> tuple[str, str]:
    """`aws eks describe-nodegroup`: {"nodegroup": {"nodegroupName": ..., "version": "1.29"}}."""
    group = data.get("nodegroup") if isinstance(data, dict) else None
    if not isinstance(group, dict) or not isinstance(group.get("nodegroupName"), str):
        raise AnswerError('expected {"nodegroup": {"nodegroupName": ..., "version": ...}}')
    name = group["nodegroupName"]
    return name, _minor(group.get("version"), f"version of node group '{name}'")


def parse_aks_node_pools(data: Any) -> dict[str, str]:
    """`az aks nodepool list -o json`: [{"name": ..., "currentOrchestratorVersion": "1.29.7", ...}]."""
    if not isinstance(data, list):
        raise AnswerError("expected a list of node pools")
    pools = {}
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise AnswerError("a node pool without a name")
        version = item.get("currentOrchestratorVersion") or item.get("orchestratorVersion")
        pools[item["name"]] = _minor(version, f"orchestratorVersion of node pool '{item['name']}'")
    return pools


def parse_aks_location(data: Any) -> str:
    """`az aks show -o json`: {"location": "westeurope", ...}."""
    location = data.get("location") if isinstance(data, dict) else None
    if not isinstance(location, str) or not location:
        raise AnswerError("no location")
    return location


def parse_nodes(data: Any) -> dict[str, str]:
    """`kubectl get nodes -o json`: kubelet versions grouped by pool label, the oldest per pool."""
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise AnswerError("expected a NodeList with items")
    pools: dict[str, str] = {}
    for node in items:
        meta = node.get("metadata") if isinstance(node, dict) else None
        status = node.get("status") if isinstance(node, dict) else None
        if not isinstance(meta, dict) or not isinstance(status, dict):
            raise AnswerError("a node without metadata/status")
        labels = meta.get("labels") or {}
        pool = next((str(labels[k]) for k in POOL_LABELS if labels.get(k)), UNPOOLED)
        kubelet = (status.get("nodeInfo") or {}).get("kubeletVersion")
        minor = _minor(kubelet, f"kubeletVersion of node '{meta.get('name', '?')}'")
        if pool not in pools or int(minor.split(".")[1]) < int(pools[pool].split(".")[1]):
            pools[pool] = minor
    return pools


def parse_helm_list(data: Any) -> dict[str, str]:
    """`helm list -A -o json`: [{"name": ..., "chart": "jupyterhub-4.4.0", ...}] -> release -> 4.4.0.

    Releases of other charts are left out; a null answer (helm 3 with no release) is an empty list."""
    if data is None:
        return {}
    if not isinstance(data, list):
        raise AnswerError("expected a list of releases")
    charts = {}
    prefix = f"{CHART_NAME}-"
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise AnswerError("a release without a name")
        chart = item.get("chart")
        if isinstance(chart, str) and chart.startswith(prefix) and chart[len(prefix) :][:1].isdigit():
            charts[item["name"]] = chart[len(prefix) :]
    return charts


# --------------------------------------------------------------------------- reading


def kubernetes_cluster(fleet: FleetConfig, cluster_name: str) -> KubernetesCluster:
    cluster = fleet.clusters.get(cluster_name)
    if cluster is None:
        names = ", ".join(sorted(fleet.clusters)) or "none"
        raise UserError(f"no cluster named '{cluster_name}' in the fleet; clusters: {names}")
    if not isinstance(cluster, KubernetesCluster):
        raise UserError(f"cluster '{cluster_name}' is a local cluster: it has no Kubernetes versions to read")
    return cluster


def region_of(cluster: KubernetesCluster) -> str:
    creds = cluster.credentials
    if isinstance(creds, AWSCredentials):
        return creds.region
    if isinstance(creds, GCPCredentials):
        return creds.zone
    return ""  # azure: read from `az aks show`; kubeconfig: none


async def _json(runner: Runner, argv: list[str], cluster: str, hint: str) -> Any:
    result = await runner(argv, timeout=TIMEOUT, check=True, hint=hint)
    text = result.stdout.strip()
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        shown = text[:80].replace("\n", " ")
        raise UserError(
            f"cluster '{cluster}': `{shlex.join(argv)}` answered with something that is not JSON "
            f"('{shown}'); check that {argv[0]} on PATH is the real CLI and up to date, then retry"
        ) from None


def _answer_error(cluster: str, argv: list[str], err: AnswerError) -> UserError:
    return UserError(
        f"cluster '{cluster}': `{shlex.join(argv)}` answered JSON hubfleet cannot read ({err}); "
        f"check that {argv[0]} is up to date and points at the right cluster, then retry"
    )


async def _parsed(runner: Runner, argv: list[str], cluster: str, hint: str, parse: Any) -> Any:
    data = await _json(runner, argv, cluster, hint)
    try:
        return parse(data)
    except AnswerError as err:
        raise _answer_error(cluster, argv, err) from None


async def _node_pools(
    cluster: KubernetesCluster, context: str | None, runner: Runner, hint: str
) -> tuple[dict[str, str], str]:
    """(node pools, region) from the provider's CLI; kubeconfig clusters from their nodes."""
    creds = cluster.credentials
    name = cluster.name
    if isinstance(creds, GCPCredentials):
        pools = await _parsed(runner, gke_node_pools_command(creds), name, hint, parse_gke_node_pools)
        return pools, creds.zone
    if isinstance(creds, AWSCredentials):
        groups = await _parsed(runner, eks_list_nodegroups_command(creds), name, hint, parse_eks_nodegroups)
        pools = {}
        for group in groups:
            argv = eks_describe_nodegroup_command(creds, group)
            pool, version = await _parsed(runner, argv, name, hint, parse_eks_nodegroup)
            pools[pool] = version
        return pools, creds.region
    if isinstance(creds, AzureCredentials):
        location = await _parsed(runner, aks_show_command(creds), name, hint, parse_aks_location)
        pools = await _parsed(runner, aks_node_pools_command(creds), name, hint, parse_aks_node_pools)
        return pools, location
    hint = f"check that kubeconfig context {context or '(current)'} reaches cluster '{name}'"
    return await _parsed(runner, kubectl_nodes_command(context), name, hint, parse_nodes), ""


async def aread_versions(
    fleet: FleetConfig, cluster_name: str, runner: Runner = run_command
) -> ClusterVersions:
    """Read the cluster's versions live (inside its credentials); UserError naming the cluster and the fix."""
    cluster = kubernetes_cluster(fleet, cluster_name)
    provider = cluster.credentials.provider
    hint = LOGIN_HINTS.get(provider, f"check kubeconfig {getattr(cluster.credentials, 'path', '')}")
    try:
        require_binaries(["kubectl", "helm", *PROVIDER_BINARIES[provider]])
        async with cluster_credentials(cluster, Path(fleet.root), runner) as access:
            ctx = access.context
            control_plane, full = await _parsed(
                runner, kubectl_version_command(ctx), cluster_name, hint, parse_server_version
            )
            pools, region = await _node_pools(cluster, ctx, runner, hint)
            charts = await _parsed(runner, helm_list_command(ctx), cluster_name, hint, parse_helm_list)
    except UserError as err:
        message = str(err)
        if message.startswith(f"cluster '{cluster_name}'"):
            raise
        raise UserError(f"cluster '{cluster_name}' ({provider}): {message}") from None
    return ClusterVersions(
        cluster=cluster_name,
        provider=provider,
        region=region,
        control_plane=control_plane,
        node_pools=pools,
        chart_versions=charts,
        read_at=utcnow(),
        control_plane_version=full,
    )


def read_versions(fleet: FleetConfig, cluster_name: str, runner: Runner = run_command) -> ClusterVersions:
    """`aread_versions` for code outside an event loop (use `await aread_versions(...)` inside one)."""
    return asyncio.run(aread_versions(fleet, cluster_name, runner))


def kubernetes_cluster_names(fleet: FleetConfig) -> list[str]:
    return sorted(name for name, c in fleet.clusters.items() if isinstance(c, KubernetesCluster))

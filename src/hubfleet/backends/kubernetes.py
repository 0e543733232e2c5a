"""Kubernetes backend: each hub is a Helm release of the Zero to JupyterHub chart, in a namespace named
after the hub, on the kube context of its cluster.

The commands are plain functions returning argv lists (tests check them exactly); `KubernetesBackend`
runs them through `backends.commands.run_command` inside the cluster's credentials context.

Chart reference: `helm upgrade --install <hub> jupyterhub --repo <chart_repo> --version <chart_version>`.
Naming the repository on the command line (rather than `helm repo add` + `<alias>/jupyterhub`) keeps
helm's global repository list untouched and makes every command self-contained; an `oci://` chart_repo
is used as `<chart_repo>/jupyterhub` instead. helm does not `--wait` (its default): readiness is checked
with `kubectl rollout status` on the hub and proxy deployments, which names the deployment that is stuck.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hubfleet.backends.base import ApplyResult, Backend, HubEndpoint
from hubfleet.backends.commands import CommandResult, Runner, require_binaries, run_command
from hubfleet.backends.kube_credentials import cluster_credentials, kube_context
from hubfleet.backends.local import hub_dir, tokens
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub, KubernetesCluster
from hubfleet.render.kubernetes import (
    SecretResolver,
    flatten_secrets,
    secret_values,
    to_yaml,
    values_yaml,
)
from hubfleet.render.local import config_hash
from hubfleet.secrets.service_tokens import derive as derive_tokens
from hubfleet.secrets.service_tokens import token_key
from hubfleet.settings import UserError

CHART_NAME = "jupyterhub"
ROLLOUT_TIMEOUT = "300s"
ROLLOUT_DEPLOYMENTS = ("hub", "proxy")
HELM_TIMEOUT = 900.0


# --------------------------------------------------------------------------- commands (plain argv lists)


def _context_args(flag: str, context: str | None) -> list[str]:
    return [flag, context] if context else []


def chart_args(cluster: KubernetesCluster) -> list[str]:
    """The chart reference with its repository and pinned version."""
    repo = cluster.chart_repo
    if repo.startswith("oci://"):
        return [f"{repo.rstrip('/')}/{CHART_NAME}", "--version", cluster.chart_version]
    return [CHART_NAME, "--repo", repo, "--version", cluster.chart_version]


def helm_upgrade_command(
    hub: Hub,
    cluster: KubernetesCluster,
    values_path: Path | str,
    secret_values_path: Path | str | None,
    *,
    context: str | None | bool = True,
) -> list[str]:
    """`helm upgrade --install` of the hub's release in its own namespace.

    context: True (default) uses the cluster's kube context; a string uses that; None/False omits it
    (the current context: used by exports, where the community's context name is unknown)."""
    ctx = kube_context(cluster) if context is True else (context or None)
    argv = [
        "helm", "upgrade", "--install", hub.name, *chart_args(cluster),
        "--namespace", hub.name, "--create-namespace",
        *_context_args("--kube-context", ctx),
        "-f", str(values_path),
    ]  # fmt: skip
    if secret_values_path is not None:
        argv += ["-f", str(secret_values_path)]
    return argv


def rollout_commands(
    hub: Hub, cluster: KubernetesCluster, *, timeout: str = ROLLOUT_TIMEOUT, context: str | None | bool = True
) -> list[list[str]]:
    """`kubectl rollout status` of the hub and proxy deployments, in that order."""
    ctx = kube_context(cluster) if context is True else (context or None)
    return [
        [
            "kubectl",
            *_context_args("--context", ctx),
            "-n",
            hub.name,
            "rollout",
            "status",
            f"deployment/{name}",
            f"--timeout={timeout}",
        ]  # fmt: skip
        for name in ROLLOUT_DEPLOYMENTS
    ]


def helm_status_command(hub: Hub, cluster: KubernetesCluster) -> list[str]:
    return [
        "helm", "status", hub.name, "--namespace", hub.name,
        *_context_args("--kube-context", kube_context(cluster)), "-o", "json",
    ]  # fmt: skip


def helm_rollback_command(hub: Hub, cluster: KubernetesCluster, revision: int) -> list[str]:
    """`helm rollback <hub> <revision>`: a new release revision with the values of `revision`."""
    return [
        "helm", "rollback", hub.name, str(revision), "--namespace", hub.name,
        *_context_args("--kube-context", kube_context(cluster)),
    ]  # fmt: skip


def helm_uninstall_command(hub_name: str, cluster: KubernetesCluster) -> list[str]:
    return [
        "helm", "uninstall", hub_name, "--namespace", hub_name,
        *_context_args("--kube-context", kube_context(cluster)),
    ]  # fmt: skip


def delete_namespace_command(hub_name: str, cluster: KubernetesCluster) -> list[str]:
    return [
        "kubectl", *_context_args("--context", kube_context(cluster)),
        "delete", "namespace", hub_name, "--ignore-not-found",
    ]  # fmt: skip


_REVISION = re.compile(r"^REVISION:\s*(\d+)\s*$", re.MULTILINE)


def _parse_revision(result: CommandResult) -> int | None:
    """The release revision from `helm status -o json` or `helm upgrade` output."""
    if not result.ok:
        return None
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        version = json.loads(result.stdout).get("version")
        return int(version) if version is not None else None
    match = _REVISION.search(result.stdout)
    return int(match.group(1)) if match else None


def write_private(path: Path, text: str) -> None:
    """Create `path` readable by its owner only (0600) before any secret is written to it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


# --------------------------------------------------------------------------- the backend


class KubernetesBackend(Backend):
    """Hubs on kubernetes clusters. State kept in <state>/hubs/<hub>/: tokens.json (control-plane service
    tokens, 0600) and kubernetes.json (the release revision to roll back to)."""

    kind = "kubernetes"

    def __init__(
        self,
        fleet: FleetConfig,
        state_dir: Path,
        secrets: SecretResolver | None = None,
        *,
        runner: Runner = run_command,
    ):
        super().__init__(fleet, state_dir)
        self._secrets = secrets
        self.runner = runner

    @property
    def resolver(self) -> SecretResolver:
        """Decrypts `{secret: KEY}` values (hubfleet.secrets), created on first use like LocalBackend's."""
        if self._secrets is None:
            from hubfleet.secrets.store import SecretResolver as FleetSecrets

            self._secrets = FleetSecrets(self.fleet)
        return self._secrets

    def cluster(self, hub: Hub) -> KubernetesCluster:
        cluster = self.fleet.cluster_of(hub)
        if not isinstance(cluster, KubernetesCluster):
            raise UserError(f"hub {hub.name}: cluster '{cluster.name}' is not a kubernetes cluster")
        return cluster

    def render(self, hub: Hub) -> str:
        """The public z2jh values YAML (no secret values)."""
        return values_yaml(self.fleet, hub)

    def config_hash(self, hub: Hub) -> str:
        """Hash of the values, the chart (repo and pinned version) and the secrets' hashes; with a
        service_token_key also the tokens derived from it, so that a new key redeploys every hub (random
        tokens are left out: each state directory has its own)."""
        cluster = self.cluster(hub)
        head = f"chart={cluster.chart_repo} {CHART_NAME} {cluster.chart_version}\n"
        key = token_key(self.fleet, self.resolver)
        derived = derive_tokens(key, hub.name) if key is not None else None
        secrets = flatten_secrets(secret_values(self.fleet, hub, self.resolver, tokens=derived))
        return config_hash(head + self.render(hub), secrets)

    def endpoint(self, hub_name: str) -> HubEndpoint:
        """https://<domain> and the control-plane token (known once the hub was applied)."""
        hub = self.fleet.hubs.get(hub_name)
        if hub is None or hub.domain is None:
            raise UserError(f"hub {hub_name}: not a kubernetes hub of this fleet")
        key = token_key(self.fleet, self.resolver)
        if key is None and not (hub_dir(self.state_dir, hub_name) / "tokens.json").exists():
            raise UserError(
                f"hub {hub_name}: never deployed from {self.state_dir}; run `hubfleet deploy` first"
            )
        return HubEndpoint(
            name=hub_name,
            url=str(self.fleet.public_url(hub)),
            token=tokens(self.state_dir, hub_name, key)["control"],
        )

    # ----------------------------------------------------------------- deploy operations

    def _state_path(self, hub_name: str) -> Path:
        return hub_dir(self.state_dir, hub_name) / "kubernetes.json"

    def _read_state(self, hub_name: str) -> dict[str, Any]:
        try:
            return json.loads(self._state_path(hub_name).read_text())
        except (OSError, ValueError):
            return {}

    def _write_state(self, hub_name: str, data: dict[str, Any]) -> None:
        path = self._state_path(hub_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2))

    async def apply(self, hub: Hub) -> ApplyResult:
        """Install or upgrade the hub's release and wait for the hub and proxy deployments to roll out.

        Runs, inside the cluster's credentials: `helm status` (to remember the revision to roll back to),
        `helm upgrade --install ... -f values.yaml -f secret-values.yaml` (the secret file is 0600 in a
        temporary directory deleted right after helm ran), then `kubectl rollout status` for
        deployment/hub and deployment/proxy. Command failures give ApplyResult(ok=False) with helm's or
        kubectl's last lines (secrets shown as ***); missing tools or credentials raise UserError saying
        what to install or run."""
        cluster = self.cluster(hub)
        require_binaries(["helm", "kubectl"])
        hub_tokens = tokens(self.state_dir, hub.name, token_key(self.fleet, self.resolver))
        secret_doc = secret_values(self.fleet, hub, self.resolver, tokens=hub_tokens)
        secrets = list(flatten_secrets(secret_doc).values())
        public = self.render(hub)
        async with cluster_credentials(cluster, self.fleet.root, self.runner):
            status = await self.runner(helm_status_command(hub, cluster), timeout=120, secrets=secrets)
            previous = _parse_revision(status)
            state = self._read_state(hub.name)
            state["previous_revision"] = previous
            self._write_state(hub.name, state)
            with tempfile.TemporaryDirectory(prefix=f"hubfleet-{hub.name}-") as tmp:
                values_path, secret_path = Path(tmp) / "values.yaml", Path(tmp) / "secret-values.yaml"
                values_path.write_text(public)
                write_private(secret_path, to_yaml(secret_doc))
                upgrade = await self.runner(
                    helm_upgrade_command(hub, cluster, values_path, secret_path),
                    timeout=HELM_TIMEOUT,
                    secrets=secrets,
                )
            if not upgrade.ok:
                return ApplyResult(False, f"helm upgrade failed (exit {upgrade.returncode})", _lines(upgrade))
            state["revision"] = _parse_revision(upgrade)
            self._write_state(hub.name, state)
            return await self._rollout(hub, cluster, secrets, "deployed")

    async def rollback(self, hub: Hub) -> ApplyResult:
        """Return the release to the revision it had before the last `apply`, then wait for the rollout.

        Runs `helm rollback <hub> <previous revision> --namespace <hub> --kube-context <ctx>`. When the last
        apply was the first install there is nothing to return to: ok=False says so (the failed release
        stays for inspection; `remove` deletes it)."""
        cluster = self.cluster(hub)
        require_binaries(["helm", "kubectl"])
        previous = self._read_state(hub.name).get("previous_revision")
        if not isinstance(previous, int):
            return ApplyResult(False, f"hub {hub.name}: no earlier release revision to roll back to")
        async with cluster_credentials(cluster, self.fleet.root, self.runner):
            result = await self.runner(helm_rollback_command(hub, cluster, previous), timeout=HELM_TIMEOUT)
            if not result.ok:
                return ApplyResult(False, f"helm rollback to revision {previous} failed", _lines(result))
            return await self._rollout(hub, cluster, [], f"rolled back to revision {previous}")

    async def remove(self, hub_name: str, *, purge: bool = False) -> ApplyResult:
        """`helm uninstall` the release. The namespace stays, with the users' home volumes (created by
        KubeSpawner, not helm) and the hub database volume (annotated helm.sh/resource-policy: keep);
        `purge` also deletes the namespace and everything in it."""
        cluster_name = self._cluster_name(hub_name)
        cluster = self.fleet.clusters.get(cluster_name) if cluster_name else None
        if not isinstance(cluster, KubernetesCluster):
            return ApplyResult(False, f"hub {hub_name}: its kubernetes cluster is unknown; remove it by hand")
        require_binaries(["helm", "kubectl"])
        async with cluster_credentials(cluster, self.fleet.root, self.runner):
            result = await self.runner(helm_uninstall_command(hub_name, cluster), timeout=HELM_TIMEOUT)
            if not result.ok:
                return ApplyResult(False, "helm uninstall failed", _lines(result))
            if purge:
                result = await self.runner(delete_namespace_command(hub_name, cluster), timeout=HELM_TIMEOUT)
                if not result.ok:
                    return ApplyResult(False, f"deleting namespace {hub_name} failed", _lines(result))
                return ApplyResult(True, f"uninstalled; namespace {hub_name} deleted")
        return ApplyResult(True, f"uninstalled; namespace {hub_name} with home and hub database volumes kept")

    def _cluster_name(self, hub_name: str) -> str | None:
        hub = self.fleet.hubs.get(hub_name)
        if hub is not None:
            return hub.cluster
        return self._read_state(hub_name).get("cluster")

    async def _rollout(
        self, hub: Hub, cluster: KubernetesCluster, secrets: Sequence[str], done: str
    ) -> ApplyResult:
        state = self._read_state(hub.name)
        state["cluster"] = cluster.name
        self._write_state(hub.name, state)
        for argv in rollout_commands(hub, cluster):
            result = await self.runner(argv, timeout=HELM_TIMEOUT, secrets=secrets)
            if not result.ok:
                return ApplyResult(False, f"{argv[-2]} did not roll out", _lines(result))
        return ApplyResult(True, done)


def _lines(result: CommandResult) -> list[str]:
    return [f"$ {' '.join(result.argv)}", *result.tail(20).splitlines()]

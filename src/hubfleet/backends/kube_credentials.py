"""Cluster credentials, one small context manager per provider (model: hubploy's auth.py).

Each one points KUBECONFIG at a kubeconfig for the cluster (a fresh temporary file for cloud providers,
written by the provider's own CLI; the configured file for `kubeconfig`), yields the kube context to
use, and restores the environment afterwards. Its errors say what to run next.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from hubfleet.backends.commands import Runner, require_binaries, run_command
from hubfleet.config.models import (
    AWSCredentials,
    AzureCredentials,
    GCPCredentials,
    KubeconfigCredentials,
    KubernetesCluster,
)
from hubfleet.settings import UserError


@dataclass(frozen=True)
class KubeAccess:
    kubeconfig: Path
    context: str | None
    """The kube context to pass to helm/kubectl; None: the kubeconfig's current context."""


def kube_context(cluster: KubernetesCluster) -> str | None:
    """The context name each provider's CLI writes into the kubeconfig (known without running anything)."""
    creds = cluster.credentials
    if isinstance(creds, GCPCredentials):
        return f"gke_{creds.project}_{creds.zone}_{creds.cluster}"
    if isinstance(creds, AWSCredentials):
        return f"arn:aws:eks:{creds.region}:{creds.account}:cluster/{creds.cluster}"
    if isinstance(creds, AzureCredentials):
        return creds.cluster
    return creds.context


def credentials_command(cluster: KubernetesCluster, kubeconfig: Path) -> list[str] | None:
    """The provider CLI command writing the cluster's credentials (None for a kubeconfig file)."""
    creds = cluster.credentials
    if isinstance(creds, GCPCredentials):
        return [
            "gcloud", "container", "clusters", "get-credentials", creds.cluster,
            "--zone", creds.zone, "--project", creds.project,
        ]  # fmt: skip
    if isinstance(creds, AWSCredentials):
        return ["aws", "eks", "update-kubeconfig", "--name", creds.cluster, "--region", creds.region]
    if isinstance(creds, AzureCredentials):
        # az writes to ~/.kube/config unless told otherwise; gcloud and aws follow $KUBECONFIG.
        return [
            "az", "aks", "get-credentials", "--resource-group", creds.resource_group,
            "--name", creds.cluster, "--file", str(kubeconfig),
        ]  # fmt: skip
    return None


PROVIDER_BINARIES = {"gcp": ["gcloud"], "aws": ["aws"], "azure": ["az"], "kubeconfig": []}
LOGIN_HINTS = {
    "gcp": "log in with `gcloud auth login` (CI: `gcloud auth activate-service-account --key-file KEY`) "
    "and check the project, zone and cluster name",
    "aws": "log in with `aws sso login` or `aws configure` (or set AWS_PROFILE) and check the region and "
    "cluster name",
    "azure": "log in with `az login` and check the resource group and cluster name",
}


@contextlib.contextmanager
def _kubeconfig_env(path: Path) -> Iterator[None]:
    """Set KUBECONFIG for the duration; restore the previous value (or its absence) afterwards."""
    before = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = before


@contextlib.asynccontextmanager
async def _cloud(cluster: KubernetesCluster, fleet_root: Path, runner: Runner) -> AsyncIterator[KubeAccess]:
    provider = cluster.credentials.provider
    require_binaries(PROVIDER_BINARIES[provider])
    with tempfile.TemporaryDirectory(prefix="hubfleet-kube-") as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        with _kubeconfig_env(kubeconfig):
            creds = cluster.credentials
            if isinstance(creds, AWSCredentials):
                await _check_aws_account(creds, runner)
            argv = credentials_command(cluster, kubeconfig)
            assert argv is not None
            await runner(argv, timeout=120, check=True, hint=LOGIN_HINTS[provider])
            if kubeconfig.exists():
                os.chmod(kubeconfig, 0o600)
            yield KubeAccess(kubeconfig, kube_context(cluster))


async def _check_aws_account(creds: AWSCredentials, runner: Runner) -> None:
    result = await runner(
        ["aws", "sts", "get-caller-identity", "--query", "Account", "--output", "text"],
        timeout=60,
        check=True,
        hint=LOGIN_HINTS["aws"],
    )
    account = result.stdout.strip()
    if account != creds.account:
        raise UserError(
            f"the AWS CLI is logged in to account {account or '(none)'}, but cluster '{creds.cluster}' is in "
            f"account {creds.account}; switch with `export AWS_PROFILE=<profile for {creds.account}>` "
            "or `aws sso login --profile <that profile>`"
        )


@contextlib.asynccontextmanager
async def _kubeconfig(
    cluster: KubernetesCluster, fleet_root: Path, runner: Runner
) -> AsyncIterator[KubeAccess]:
    creds = cluster.credentials
    assert isinstance(creds, KubeconfigCredentials)
    path = Path(creds.path).expanduser()
    path = path if path.is_absolute() else (fleet_root / path)
    if not path.is_file():
        raise UserError(
            f"cluster '{cluster.name}': kubeconfig {path} not found; create it (for example "
            f"`kubectl config view --minify --flatten > {path}`) or fix `credentials.path`"
        )
    with _kubeconfig_env(path.resolve()):
        yield KubeAccess(path.resolve(), kube_context(cluster))


PROVIDERS: dict[str, Callable[[KubernetesCluster, Path, Runner], AbstractAsyncContextManager[KubeAccess]]] = {
    "gcp": _cloud,
    "aws": _cloud,
    "azure": _cloud,
    "kubeconfig": _kubeconfig,
}


def cluster_credentials(
    cluster: KubernetesCluster, fleet_root: Path, runner: Runner = run_command
) -> AbstractAsyncContextManager[KubeAccess]:
    """`async with cluster_credentials(cluster, root) as access:` helm and kubectl reach the cluster inside
    the block (KUBECONFIG is set); the environment is restored and temporary files deleted afterwards."""
    return PROVIDERS[cluster.credentials.provider](cluster, fleet_root, runner)

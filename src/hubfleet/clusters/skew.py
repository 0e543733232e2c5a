"""The version-skew policy as steps: which minor version the control plane and each node pool go to, in
which order, so that no step leaves the cluster outside what Kubernetes and the provider support.

Rules (Kubernetes "Version Skew Policy"; the providers' own limits are stricter):
- the control plane moves one minor version per step (no provider lets it skip one);
- a node pool is never newer than the control plane, so node pools move after it;
- before a control-plane step, every node pool that the step would leave more than MAX_NODE_SKEW minors
  behind is moved up to the control plane's current minor; at the end every node pool is at the target.

MAX_NODE_SKEW per provider, how far a node pool may lag right after a control-plane step: Kubernetes allows
kubelets three minors behind the API server; GKE's versioning page allows node pools two minors behind the
control plane; AKS's likewise two ("within two minor versions of the control plane version"); EKS refuses
`update-cluster-version` unless every managed node group already runs the cluster's version (API reference of
UpdateClusterVersion), so a node group is at most one behind right after the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hubfleet.clusters.removed_apis import minor_key, minor_of
from hubfleet.settings import UserError

KUBERNETES_MAX_NODE_SKEW = 3
MAX_NODE_SKEW = {"gcp": 2, "azure": 2, "aws": 1, "kubeconfig": KUBERNETES_MAX_NODE_SKEW}

StepKind = Literal["control_plane", "node_pool"]


@dataclass(frozen=True)
class VersionStep:
    kind: StepKind
    version: str
    """The minor version this step goes to ("1.31")."""
    from_version: str
    pool: str | None = None

    def describe(self) -> str:
        what = "control plane" if self.kind == "control_plane" else f"node pool {self.pool}"
        return f"{what} {self.from_version} -> {self.version}"


def _minor(major: int, minor: int) -> str:
    return f"{major}.{minor}"


def skew_steps(
    control_plane: str,
    node_pools: dict[str, str],
    target: str,
    *,
    max_node_skew: int = KUBERNETES_MAX_NODE_SKEW,
) -> list[VersionStep]:
    """The ordered steps from the current versions to `target` (minor versions; patch parts ignored)."""
    max_node_skew = max(1, min(max_node_skew, KUBERNETES_MAX_NODE_SKEW))
    cp = minor_key(control_plane)
    goal = minor_key(target)
    if cp[0] != goal[0]:
        raise UserError(
            f"cannot plan an upgrade across major versions ({minor_of(control_plane)} -> {target})"
        )
    if goal < cp:
        raise UserError(
            f"the control plane already runs {minor_of(control_plane)}, newer than {minor_of(target)}; "
            "Kubernetes control planes cannot be downgraded"
        )
    pools = {name: minor_key(version) for name, version in sorted(node_pools.items())}
    for name, version in pools.items():
        if version > goal:
            raise UserError(
                f"node pool {name} runs {_minor(*version)}, newer than the target {minor_of(target)}; "
                "node pools cannot be downgraded: choose a target of at least its version"
            )
    steps: list[VersionStep] = []
    while cp < goal:
        following = (cp[0], cp[1] + 1)
        for name, version in pools.items():
            if following[1] - version[1] > max_node_skew:
                steps.append(VersionStep("node_pool", _minor(*cp), _minor(*version), name))
                pools[name] = cp
        steps.append(VersionStep("control_plane", _minor(*following), _minor(*cp)))
        cp = following
    for name, version in pools.items():
        if version < goal:
            steps.append(VersionStep("node_pool", _minor(*goal), _minor(*version), name))
    return steps


def check_steps(
    control_plane: str, node_pools: dict[str, str], steps: list[VersionStep], max_node_skew: int
) -> None:
    """Replay `steps` and raise if any leaves the cluster outside the policy (the planner's own test)."""
    cp = minor_key(control_plane)
    pools = {name: minor_key(v) for name, v in node_pools.items()}
    for step in steps:
        version = minor_key(step.version)
        if step.kind == "control_plane":
            if version[1] != cp[1] + 1:
                raise AssertionError(f"{step.describe()} skips a minor version")
            cp = version
        else:
            if version > cp:
                raise AssertionError(f"{step.describe()} is newer than the control plane {_minor(*cp)}")
            pools[str(step.pool)] = version
        for name, pool in pools.items() if step.kind == "control_plane" else ():
            if cp[1] - pool[1] > max_node_skew:
                raise AssertionError(f"after {step.describe()}, node pool {name} is too far behind")

"""`hubfleet upgrade CLUSTER --to VERSION [--resume]`: run an upgrade plan step by step.

Each step: read the versions live (a step the cluster already shows as done is not run again, so a resumed
run after a crash never repeats a provider upgrade), run the provider's commands inside the cluster's
credentials (the same login code as deploys), read the versions again to confirm the step took (and keep
that reading in the store, so `hubfleet clusters` and the console show the cluster as it is), then check
every hub on the cluster. Each step is planned maintenance of the cluster's hubs. The first failure stops
the run; every step is recorded in the store with its status, times, the end of its output and its hub
checks, and `--resume` continues at the first step not ok.

The hub check after a step is what can be asked of the cluster without a user's browser: the hub and proxy
deployments rolled out (`kubectl rollout status`, as deploys wait for them), and the hub answering its REST
API through its own proxy, reached through the Kubernetes API server's service proxy
(`kubectl get --raw /api/v1/namespaces/HUB/services/proxy-public:http/proxy/hub/api/`), which needs neither
DNS nor the ingress. The prober, when the daemon runs, keeps probing the public URLs meanwhile; its failed
probes during each step's window are each hub's interruption (`step_interruptions`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from hubfleet.backends.commands import Runner, require_binaries, run_command
from hubfleet.backends.kube_credentials import PROVIDER_BINARIES, cluster_credentials, kube_context
from hubfleet.backends.kubernetes import rollout_commands
from hubfleet.clock import utcnow
from hubfleet.clusters.removed_apis import minor_key
from hubfleet.clusters.upgrade_plan import UpgradePlan, kubernetes_cluster, plan_for_cluster
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub, KubernetesCluster
from hubfleet.settings import UserError
from hubfleet.store import upgrades as records
from hubfleet.store.api import Store

STEP_TIMEOUT = 3 * 3600.0
"""A provider upgrade of a large node pool can take hours."""
CHECK_ROLLOUT_TIMEOUT = "300s"
CHECK_TIMEOUT = 330.0

Report = Callable[[str], None]


@dataclass(frozen=True)
class HubCheck:
    hub: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"hub": self.hub, "ok": self.ok, "detail": self.detail}


@contextlib.contextmanager
def cluster_lock(state_dir: Path, cluster: str) -> Iterator[None]:
    """One `hubfleet upgrade` of a cluster at a time (a second one, or a --resume while the first still runs,
    would run provider upgrades twice): an exclusive lock on <state>/upgrade-<cluster>.lock."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / f"upgrade-{cluster}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another `hubfleet upgrade {cluster}` is running from this state directory ({path} is "
                f"locked); wait for it to finish (its steps: `hubfleet history {cluster}`)"
            ) from None
        yield
    finally:
        os.close(fd)


def hub_api_command(hub: Hub, cluster: KubernetesCluster) -> list[str]:
    """The hub's REST API root through its proxy, via the API server's service proxy (no DNS, no ingress)."""
    context = kube_context(cluster)
    return [
        "kubectl", *(["--context", context] if context else []), "get", "--raw",
        f"/api/v1/namespaces/{hub.name}/services/proxy-public:http/proxy/hub/api/",
    ]  # fmt: skip


async def check_hub(hub: Hub, cluster: KubernetesCluster, runner: Runner) -> HubCheck:
    """Rollout of deployment/hub and deployment/proxy, then the hub's API through its proxy (inside the
    cluster's credentials)."""
    for argv in rollout_commands(hub, cluster, timeout=CHECK_ROLLOUT_TIMEOUT):
        result = await runner(argv, timeout=CHECK_TIMEOUT)
        if not result.ok:
            return HubCheck(hub.name, False, f"{argv[-2]} not rolled out: {result.tail(3)}")
    result = await runner(hub_api_command(hub, cluster), timeout=120)
    if not result.ok:
        return HubCheck(hub.name, False, f"the hub's API did not answer through its proxy: {result.tail(3)}")
    try:
        version = json.loads(result.stdout).get("version")
    except (ValueError, AttributeError):
        version = None
    if not version:
        return HubCheck(hub.name, False, "the hub's API answered without a JupyterHub version")
    return HubCheck(hub.name, True, f"hub and proxy rolled out; JupyterHub {version} answers")


def cluster_hubs(fleet: FleetConfig, cluster: str) -> list[Hub]:
    return sorted((h for h in fleet.hubs.values() if h.cluster == cluster), key=lambda h: h.name)


def _reached(step: records.StepRecord, versions: Any) -> bool:
    goal = minor_key(step.to_version)
    if step.kind == "control_plane":
        return minor_key(versions.control_plane) >= goal
    current = versions.node_pools.get(step.pool or "")
    return current is not None and minor_key(current) >= goal


def _plan_steps(plan: UpgradePlan) -> list[dict[str, Any]]:
    return [
        {
            "kind": s.step.kind,
            "pool": s.step.pool,
            "from": s.step.from_version,
            "to": s.step.version,
            "description": s.step.describe(),
            "commands": s.commands,
        }
        for s in plan.steps
    ]


class UpgradeFailed(UserError):
    """A step failed: the run is recorded as failed and `--resume` continues it."""


@dataclass
class UpgradeOptions:
    today: date
    actor: str = ""
    calendar_file: Path | None = None
    chart_table_file: Path | None = None
    removed_file: Path | None = None
    charts_dir: Path | None = None
    allow_blocked: bool = False


async def start_or_resume(
    fleet: FleetConfig,
    store: Store,
    cluster_name: str,
    target: str | None,
    options: UpgradeOptions,
    *,
    resume: bool,
    runner: Runner = run_command,
    report: Report = lambda _line: None,
) -> records.RunRecord | None:
    """The run to execute: the unfinished one (resume) or a new one from a fresh plan (None: nothing to
    do)."""
    from hubfleet.clusters.inventory import record_versions
    from hubfleet.clusters.versions import aread_versions

    cluster = kubernetes_cluster(fleet, cluster_name)
    if cluster.credentials.provider == "kubeconfig":
        raise UserError(
            f"cluster '{cluster_name}' is reached through a kubeconfig file: hubfleet has no provider "
            f"command to upgrade it; run the steps of `hubfleet upgrade-plan {cluster_name}` with your own "
            "tooling"
        )
    existing = records.unfinished_run(store, cluster_name)
    if resume:
        if existing is None:
            raise UserError(
                f"no unfinished upgrade of cluster '{cluster_name}' to resume; start one with "
                f"`hubfleet upgrade {cluster_name} --to VERSION`"
            )
        if target and minor_key(target) != minor_key(existing.target):
            raise UserError(
                f"the unfinished upgrade of '{cluster_name}' goes to {existing.target}, not {target}; "
                f"resume it with `--to {existing.target} --resume`"
            )
        step = existing.first_unfinished()
        report(
            f"resuming run #{existing.id} of {cluster_name} to {existing.target} "
            f"at step {step.number if step else '-'}"
        )
        records.reopen_run(store, existing.id)
        return records.get_run(store, existing.id)
    if existing is not None:
        step = existing.first_unfinished()
        where = f" at step {step.number} ({step.description})" if step else ""
        raise UserError(
            f"upgrade run #{existing.id} of cluster '{cluster_name}' to {existing.target} stopped{where}: "
            f"continue it with `hubfleet upgrade {cluster_name} --to {existing.target} --resume`"
        )
    versions = await aread_versions(fleet, cluster_name, runner)
    record_versions(store, versions)
    plan = plan_for_cluster(
        fleet,
        cluster_name,
        target,
        today=options.today,
        calendar_file=options.calendar_file,
        chart_table_file=options.chart_table_file,
        removed_file=options.removed_file,
        charts_dir=options.charts_dir,
        versions=versions,
    )
    if plan.blocked and not options.allow_blocked:
        raise UserError(
            f"the upgrade of '{cluster_name}' to {plan.target} is blocked: "
            + "; ".join(plan.blocked)
            + " (fix these first, or run anyway with --ignore-blockers)"
        )
    if not plan.steps:
        report(f"cluster {cluster_name} already runs {plan.target}: nothing to do")
        return None
    return records.start_run(
        store,
        cluster_name,
        plan.target,
        plan.control_plane,
        _plan_steps(plan),
        actor=options.actor,
        plan=plan.to_json(),
    )


async def execute(
    fleet: FleetConfig,
    store: Store,
    run: records.RunRecord,
    *,
    runner: Runner = run_command,
    report: Report = lambda _line: None,
    actor: str = "",
) -> records.RunRecord:
    """Run the steps of `run` from its first unfinished one; raise UpgradeFailed at the first failure.
    Each step is a window of planned maintenance of every hub on the cluster (as deploys open one), so the
    prober's failures during it count as planned downtime, not as unplanned outages."""
    from hubfleet.clusters.inventory import record_versions
    from hubfleet.clusters.versions import aread_versions

    cluster = kubernetes_cluster(fleet, run.cluster)
    provider = cluster.credentials.provider
    require_binaries(["kubectl", "helm", *PROVIDER_BINARIES[provider]])
    for step in run.steps:
        if step.status == "ok":
            continue
        report(f"step {step.number}/{len(run.steps)}: {step.description}")
        records.update_step(
            store, step.id, status="running", started_at=utcnow(), finished_at=None, message=""
        )
        # planned maintenance of every hub on the cluster: the prober's failures in it are planned downtime
        reason = f"upgrade of cluster {run.cluster} to {run.target}, step {step.number}: {step.description}"
        windows = [
            store.begin_maintenance(hub.name, reason=reason, actor=actor)
            for hub in cluster_hubs(fleet, run.cluster)
        ]
        try:
            output, checks = await _run_step(
                fleet, cluster, step, runner, report, aread_versions, lambda v: record_versions(store, v)
            )
        except UserError as exc:
            _fail(store, run, step, str(exc), getattr(exc, "output", ""), getattr(exc, "checks", []))
        finally:
            for window in windows:
                store.end_maintenance(window)
        records.update_step(
            store, step.id, status="ok", finished_at=utcnow(), output=output,
            checks=[c.to_json() for c in checks], message="",
        )  # fmt: skip
    records.finish_run(store, run.id, "done", f"cluster {run.cluster} runs {run.target}")
    report(f"cluster {run.cluster} runs {run.target}")
    done = records.get_run(store, run.id)
    assert done is not None
    return done


class _StepError(UserError):
    def __init__(self, message: str, output: str = "", checks: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.output = output
        self.checks = checks or []


def _fail(
    store: Store,
    run: records.RunRecord,
    step: records.StepRecord,
    message: str,
    output: str,
    checks: list[Any],
) -> None:
    records.update_step(
        store, step.id, status="failed", finished_at=utcnow(), output=output, checks=checks, message=message
    )
    text = (
        f"upgrade of {run.cluster} to {run.target} stopped at step {step.number} ({step.description}): "
        f"{message}; fix it, then continue with `hubfleet upgrade {run.cluster} --to {run.target} --resume`"
    )
    records.finish_run(store, run.id, "failed", text)
    raise UpgradeFailed(text)


async def _run_step(
    fleet: FleetConfig,
    cluster: KubernetesCluster,
    step: records.StepRecord,
    runner: Runner,
    report: Report,
    read: Any,
    record: Callable[[Any], None],
) -> tuple[str, list[HubCheck]]:
    before = await read(fleet, cluster.name, runner)
    lines: list[str] = []
    if _reached(step, before):
        lines.append(f"already at {step.to_version} before the step: its commands were not run again")
        report(f"  already at {step.to_version}; not run again")
    else:
        async with cluster_credentials(cluster, fleet.root, runner):
            for argv in step.commands:
                report(f"  $ {shlex.join(argv)}")
                result = await runner(argv, timeout=STEP_TIMEOUT)
                lines += [f"$ {shlex.join(result.argv)}", result.tail(20)]
                if not result.ok:
                    raise _StepError(
                        f"`{shlex.join(result.argv)}` failed (exit {result.returncode}): {result.tail(3)}",
                        "\n".join(lines),
                    )
    after = await read(fleet, cluster.name, runner)
    record(after)
    if not _reached(step, after):
        what = (
            after.control_plane
            if step.kind == "control_plane"
            else after.node_pools.get(step.pool or "", "?")
        )
        raise _StepError(
            f"the provider's commands succeeded but the cluster still shows {what}, not {step.to_version}",
            "\n".join(lines),
        )
    checks: list[HubCheck] = []
    installed = set(after.chart_versions)
    async with cluster_credentials(cluster, fleet.root, runner):
        for hub in cluster_hubs(fleet, cluster.name):
            if hub.name not in installed:
                checks.append(HubCheck(hub.name, True, "not checked: no helm release of it on the cluster"))
                continue
            checks.append(await check_hub(hub, cluster, runner))
    for check in checks:
        report(f"  {'ok  ' if check.ok else 'FAIL'} {check.hub}: {check.detail}")
    failed = [c for c in checks if not c.ok]
    if failed:
        raise _StepError(
            "hub check failed after the step: " + "; ".join(f"{c.hub}: {c.detail}" for c in failed),
            "\n".join(lines),
            [c.to_json() for c in checks],
        )
    return "\n".join(lines), checks


def step_interruptions(
    store: Store, run: records.RunRecord, hubs: list[str]
) -> dict[int, dict[str, float | None]]:
    """Per step number, the failed-probe seconds of each hub during the step's window (None: no probes)."""
    result: dict[int, dict[str, float | None]] = {}
    for step in run.steps:
        if step.started_at is None:
            continue
        end = step.finished_at or utcnow()
        result[step.number] = records.failed_probe_seconds(store, hubs, step.started_at, end)
    return result


def run_json(store: Store, fleet: FleetConfig | None, run: records.RunRecord) -> dict[str, Any]:
    """A run as `upgrade --json`, history and the console show it: steps with their hubs' interruption."""
    hubs = [h.name for h in cluster_hubs(fleet, run.cluster)] if fleet is not None else []
    hubs = hubs or sorted({c["hub"] for s in run.steps for c in s.checks if "hub" in c})
    interruptions = step_interruptions(store, run, hubs)
    data = run.to_json()
    for step in data["steps"]:
        step["interruption_seconds"] = interruptions.get(step["number"], {})
    return data

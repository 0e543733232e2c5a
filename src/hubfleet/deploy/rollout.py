"""Rollout: apply a plan wave by wave (staging, then prod), the hubs of a wave in parallel, each gated by
the synthetic check and rolled back to its last good configuration when its deploy or check fails.

A community's prod hub is touched only when its staging hub did not fail in this rollout, and a prod hub of a
cluster with a `staging_hub` only when that hub passed: deployed and checked in the staging wave when it
changed, else checked (as it runs) before the prod wave.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from hubfleet.backends.base import ApplyResult, Backend
from hubfleet.checks.synthetic import check_environments, checkable
from hubfleet.config.fleet import FleetConfig
from hubfleet.deploy.plan import HubPlan, Plan
from hubfleet.deploy.state import record
from hubfleet.render.local import dummy_password
from hubfleet.secrets.store import SecretResolver
from hubfleet.settings import UserError
from hubfleet.store.api import Store

Result = Literal["deployed", "rolled_back", "failed", "skipped", "removed"]
FAILED: set[str] = {"rolled_back", "failed", "skipped"}
DEFAULT_PARALLEL = 4


@dataclass
class HubOutcome:
    name: str
    community: str
    stage: str
    action: str
    status: str = "waiting"  # waiting | deploying | checking | rolling back | removing | <Result>
    result: Result | None = None
    message: str = ""
    log_tail: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "community": self.community,
            "stage": self.stage,
            "action": self.action,
            "result": self.result,
            "message": self.message,
            "log_tail": self.log_tail,
            "seconds": round(self.seconds, 2),
        }


@dataclass
class Rollout:
    outcomes: dict[str, HubOutcome]
    gate_checks: dict[str, str | None] = field(default_factory=dict)
    """Cluster staging hubs not deployed in this rollout, checked before the prod wave: name -> None when the
    check passed, else why it failed."""

    def by_result(self, result: Result) -> list[str]:
        return [o.name for o in self.outcomes.values() if o.result == result]

    @property
    def ok(self) -> bool:
        return not any(o.result in FAILED for o in self.outcomes.values())

    def to_json(self) -> dict[str, Any]:
        results: tuple[Result, ...] = ("deployed", "rolled_back", "failed", "skipped", "removed")
        return {
            "ok": self.ok,
            "hubs": [o.to_json() for o in self.outcomes.values()],
            **{r: self.by_result(r) for r in results},
            **({"gate_checks": self.gate_checks} if self.gate_checks else {}),
        }


class Deployer:
    """Runs one rollout; `on_change` is called whenever a hub's status changes (for the live display)."""

    def __init__(
        self,
        fleet: FleetConfig,
        store: Store,
        backends: dict[str, Backend],
        *,
        parallel: int = DEFAULT_PARALLEL,
        purge: bool = False,
        actor: str = "hubfleet deploy",
        commit: str | None = None,
        check_timeout: float = 180,
        on_change: Callable[[HubOutcome], None] | None = None,
    ):
        if parallel < 1:
            raise UserError(f"--parallel must be at least 1, not {parallel}")
        self.fleet = fleet
        self.store = store
        self.backends = backends
        self.parallel = parallel
        self.purge = purge
        self.actor = actor
        self.commit = commit
        self.check_timeout = check_timeout
        self.on_change = on_change or (lambda outcome: None)
        self.secrets = SecretResolver(fleet)
        """Decrypts a dummy hub's password, for the check's sign-in through the login form."""

    async def run(self, plan: Plan) -> Rollout:
        changes = plan.changes
        outcomes = {h.name: HubOutcome(h.name, h.community, h.stage, h.action) for h in changes}
        rollout = Rollout(outcomes)
        limit = asyncio.Semaphore(self.parallel)
        for stage in ("staging", "prod"):
            wave = [h for h in changes if h.stage == stage]
            if stage == "prod":
                await self._check_cluster_gates(plan, rollout)
            await asyncio.gather(*(self._one(h, rollout, limit) for h in wave))
        return rollout

    async def _check_cluster_gates(self, plan: Plan, rollout: Rollout) -> None:
        """Check each cluster staging hub that gates a prod change and was not deployed in this rollout (it
        runs unchanged): the prod hubs of its cluster wait for it as for a deployed one."""
        for gate in plan.cluster_gates():
            if gate not in rollout.outcomes and gate in self.fleet.hubs:
                kind = self.fleet.clusters[self.fleet.hubs[gate].cluster].kind
                try:
                    rollout.gate_checks[gate] = await self._check(self.backends[kind], gate)
                except UserError as exc:  # it cannot be reached at all (never started, state lost)
                    rollout.gate_checks[gate] = f"check failed: {exc}"

    def _set(self, outcome: HubOutcome, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(outcome, key, value)
        self.on_change(outcome)

    async def _one(self, entry: HubPlan, rollout: Rollout, limit: asyncio.Semaphore) -> None:
        outcome = rollout.outcomes[entry.name]
        blocker = self._failed_staging(entry, rollout)
        gate = self._failed_cluster_gate(entry, rollout)
        if blocker or gate:
            message = (
                f"not touched: staging hub {blocker} of community {entry.community} failed"
                if blocker
                else f"not touched: staging hub {entry.cluster_gate} of cluster {entry.cluster} {gate}"
            )
            self._set(outcome, status="skipped", result="skipped", message=message)
            self._record(entry, "skipped", message)
            return
        async with limit:
            began = time.monotonic()
            try:
                if entry.action == "remove":
                    await self._remove(entry, outcome)
                else:
                    # planned maintenance: probes failing while the hub restarts are not an outage
                    window = self.store.begin_maintenance(
                        entry.name, reason=f"deploy ({entry.action})", actor=self.actor
                    )
                    try:
                        await self._deploy(entry, outcome)
                    finally:
                        self.store.end_maintenance(window)
            except UserError as exc:
                self._set(outcome, status="failed", result="failed", message=str(exc))
                self._record(entry, "failed", str(exc))
            finally:
                outcome.seconds = time.monotonic() - began
                self.on_change(outcome)

    def _failed_staging(self, entry: HubPlan, rollout: Rollout) -> str | None:
        if entry.stage != "prod":
            return None
        for other in rollout.outcomes.values():
            if other.stage == "staging" and other.community == entry.community and other.result in FAILED:
                return other.name
        return None

    def _failed_cluster_gate(self, entry: HubPlan, rollout: Rollout) -> str | None:
        """Why the prod hub's cluster staging hub did not pass (None: it passed, or there is none)."""
        gate = entry.cluster_gate
        if entry.stage != "prod" or entry.action == "remove" or gate is None:
            return None
        if gate in rollout.outcomes:
            other = rollout.outcomes[gate]
            return f"failed ({other.result})" if other.result in FAILED else None
        failure = rollout.gate_checks.get(gate)
        return f"did not pass its check: {failure}" if failure else None

    async def _deploy(self, entry: HubPlan, outcome: HubOutcome) -> None:
        hub = self.fleet.hubs[entry.name]
        backend = self.backends[entry.kind]
        self._set(outcome, status="deploying")
        applied = await backend.apply(hub)
        failure = _why(applied, "deploy")
        if applied.ok:
            self._set(outcome, status="checking")
            failure = await self._check(backend, entry.name)
            if failure is None:
                self._set(outcome, status="deployed", result="deployed", message="deployed and checked")
                self._record(entry, "ok", "")
                return
        self._set(outcome, log_tail=applied.log_tail)
        if entry.action == "create":
            await backend.remove(entry.name)
            message = f"{failure}; the new hub was stopped"
            self._set(outcome, status="failed", result="failed", message=message)
            self._record(entry, "failed", message)
            return
        self._set(outcome, status="rolling back")
        restored = await backend.rollback(hub)
        recheck = (
            await self._check(backend, entry.name, environments=False)
            if restored.ok
            else _why(restored, "rollback")
        )
        if recheck is None:
            message = f"{failure}; rolled back to the last good configuration, which passed its check"
            self._set(outcome, status="rolled_back", result="rolled_back", message=message)
            self._record(entry, "rolled_back", message)
        else:
            message = f"{failure}; rollback failed too: {recheck}"
            self._set(outcome, status="failed", result="failed", message=message)
            self._record(entry, "failed", message)

    async def _check(self, backend: Backend, name: str, *, environments: bool = True) -> str | None:
        """The check; with `environments`, once in each environment of the hub the check user may start (a
        rolled-back hub runs its last good configuration, whose environments may differ: the plain check)."""
        endpoint = backend.check_endpoint(name)  # where its users reach it (the front door)
        hub = self.fleet.hubs.get(name)
        password = dummy_password(hub, self.secrets) if hub is not None else None
        slugs = checkable(hub)[0] if hub is not None and environments else []
        results = await check_environments(
            name,
            endpoint.url,
            endpoint.token,
            slugs,
            self.store,
            timeout=self.check_timeout,
            dummy_password=password,
            via=endpoint.via,
        )
        for result in results:
            if not result.ok:
                where = f" (environment {result.environment})" if result.environment else ""
                return f"check failed{where}: {result.error}"
        return None

    async def _remove(self, entry: HubPlan, outcome: HubOutcome) -> None:
        self._set(outcome, status="removing")
        backend = self.backends.get(entry.kind)
        if backend is None:
            raise UserError(f"hub {entry.name} ran on a {entry.kind} cluster that the fleet no longer has")
        removed = await backend.remove(entry.name, purge=self.purge)
        result: Result = "removed" if removed.ok else "failed"
        self._set(outcome, status=result, result=result, message=removed.message)
        if removed.ok:
            self.store.record_deployment(
                entry.name,
                "",
                "removed",
                message=removed.message,
                actor=self.actor,
                community=entry.community,
                stage=entry.stage,
                reasons=entry.reasons,
                commit=self.commit,
            )
        else:
            self._record(entry, "failed", removed.message)

    def _record(self, entry: HubPlan, result: Any, message: str) -> None:
        hub = self.fleet.hubs.get(entry.name)
        if hub is None:
            self.store.record_deployment(
                entry.name,
                entry.config_hash or "",
                result,
                message=message,
                actor=self.actor,
                community=entry.community,
                stage=entry.stage,
                reasons=entry.reasons,
                commit=self.commit,
            )
            return
        record(
            self.store,
            self.fleet,
            hub,
            config_hash=entry.config_hash or "",
            rendered=entry.rendered or "",
            result=result,
            message=message,
            actor=self.actor,
            reasons=entry.reasons,
            commit=self.commit,
        )


def _why(result: ApplyResult, what: str) -> str:
    return result.message or f"{what} failed"

"""`hubfleet events apply`: ready mode on kubernetes hubs, as the clock (and operators) say.

For each kubernetes hub: what ready mode it should be in (render/ready_mode.py), the windows to open or close
in the store, and the user placeholders that go with it. A hub whose running values differ from the wanted
ones *only* in ready mode is redeployed through the deploy path (hubfleet.deploy.rollout.Deployer: helm,
rollout status, the synthetic check, rollback on failure, the deployment record) in a plan of its own: no
staging wave and no cluster gate wait for it, because ready mode changes how much is warm, not what runs.
A hub with other changes not deployed yet is left alone (`hubfleet deploy` takes those through staging, and
renders the ready mode the clock says with them).

z2jh 4.4.0 keeps all values in the hub's Secret, whose checksum is an annotation of the hub Deployment: a
placeholder change restarts the hub pod (the proxy and running user servers stay; sign-ins wait about a
minute). That is why windows change only at their edges, once each.

No kubernetes cluster runs on the machines that test this: the tests run it with fake helm/kubectl/gcloud
commands on PATH (tests/test_event_ready_mode.py) and say so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from hubfleet.backends.kubernetes import KubernetesBackend
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.deploy.plan import HubPlan, Plan
from hubfleet.deploy.rollout import Deployer, HubOutcome
from hubfleet.render.kubernetes import values_yaml
from hubfleet.render.ready_mode import (
    NOT_READY,
    SCHEDULE,
    ReadySeats,
    Transition,
    event_seats,
    seats,
    transitions,
    wanted,
)
from hubfleet.store import events as stored
from hubfleet.store.api import Store

Action = Literal["deploy", "unchanged", "blocked", "not deployed"]


class ReadyBackend(KubernetesBackend):
    """The kubernetes backend rendering each hub with a given ready mode (an operator's, or the schedule's
    at one `now`) instead of reading the clock, so that the plan's hash and what helm gets are the same."""

    def __init__(self, fleet: FleetConfig, state_dir: Path, ready: dict[str, ReadySeats], **kwargs: Any):
        super().__init__(fleet, state_dir, **kwargs)
        self.ready = ready

    def render(self, hub: Hub) -> str:
        return values_yaml(self.fleet, hub, ready=self.ready.get(hub.name, NOT_READY))


@dataclass
class HubReady:
    """What `events apply` does for one hub."""

    hub: str
    event: str | None
    why: str
    seats: int
    """User placeholders rendered (the fixed `kubernetes.placeholders` when not in ready mode)."""
    transitions: list[Transition]
    action: Action
    message: str = ""
    outcome: HubOutcome | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is None or self.outcome.result == "deployed"

    def to_json(self) -> dict[str, Any]:
        return {
            "hub": self.hub,
            "ready_for": self.event,
            "why": self.why,
            "placeholders": self.seats,
            "windows": [
                {"change": t.kind, "event": t.event, "why": t.why, "text": t.describe()}
                for t in self.transitions
            ],
            "action": self.action,
            "message": self.message,
            "result": self.outcome.result if self.outcome else None,
        }


@dataclass
class ApplyReport:
    hubs: list[HubReady] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hubs)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "dry_run": self.dry_run, "hubs": [h.to_json() for h in self.hubs]}


def kubernetes_hubs(config: FleetConfig, only: set[str] | None = None) -> list[Hub]:
    """Kubernetes hubs with events (others have no ready mode to apply)."""
    return [
        hub
        for hub in config.hubs.values()
        if config.clusters[hub.cluster].kind == "kubernetes"
        and (only is None or hub.name in only)
        and config.events_of(hub.name)
    ]


def placeholders_of(hub: Hub, ready: ReadySeats) -> int:
    fixed = hub.kubernetes.placeholders if hub.kubernetes else 0
    return fixed if ready.event is None else max(ready.seats, fixed)


async def apply_ready_modes(
    config: FleetConfig,
    state_dir: Path,
    store: Store,
    now: datetime,
    *,
    hubs: set[str] | None = None,
    dry_run: bool = False,
    actor: str = "hubfleet events apply",
    deployer: Callable[..., Deployer] = Deployer,
    backend_options: dict[str, Any] | None = None,
    on_change: Callable[[HubOutcome], None] | None = None,
) -> ApplyReport:
    """Open and close the store's windows of kubernetes hubs and redeploy those whose placeholders change.

    `deployer` makes the Deployer (tests pass one whose check reaches no cluster: see the test module);
    `backend_options` go to the kubernetes backend (a secret resolver, a command runner)."""
    report = ApplyReport(dry_run=dry_run)
    deployed = store.deployed()
    for hub in kubernetes_hubs(config, hubs):
        windows = stored.windows(store, hub.name, limit=50)
        want = wanted(hub.name, config.events_of(hub.name), windows, now)
        ready = seats(config, hub.name, want)
        entry = HubReady(
            hub.name,
            want.event.name if want.event else None,
            want.why,
            placeholders_of(hub, ready),
            transitions(want, windows),
            "unchanged",
        )
        report.hubs.append(entry)
        backend = ReadyBackend(config, state_dir, {hub.name: ready}, **(backend_options or {}))
        last = deployed.get(hub.name)
        desired = backend.config_hash(hub)
        if last is None:
            entry.action, entry.message = "not deployed", "never deployed: `hubfleet deploy` creates it"
        elif last.config_hash != desired:
            if last.config_hash in _ready_hashes(config, state_dir, hub, backend_options):
                entry.action = "deploy"
                entry.message = f"user placeholders: {entry.seats}"
            else:
                entry.action = "blocked"
                entry.message = (
                    "its configuration has changes not deployed yet: `hubfleet deploy` deploys them through "
                    "staging, with the ready mode the clock says"
                )
        if dry_run:
            continue
        _record_windows(store, entry, ready)
        if entry.action != "deploy":
            continue
        plan_entry = HubPlan(
            hub.name,
            hub.community,
            hub.stage,
            hub.cluster,
            "kubernetes",
            "update",
            reasons=[_reason(entry)],
            config_hash=desired,
            rendered=backend.render(hub),
        )
        rollout = await deployer(
            config, store, {"kubernetes": backend}, actor=actor, on_change=on_change
        ).run(Plan([plan_entry]))  # a plan of its own: no staging wave, no cluster gate
        entry.outcome = rollout.outcomes[hub.name]
        entry.message = entry.outcome.message
        _note_result(store, hub.name, entry)
    return report


def _ready_hashes(config: FleetConfig, state_dir: Path, hub: Hub, options: dict[str, Any] | None) -> set[str]:
    """The hub's hash in every ready mode it can be in (none, or any of its events): a deployed hash among
    them means only ready mode differs from what runs."""
    modes = [NOT_READY, *(event_seats(config, hub, e) for e in config.events_of(hub.name))]
    found = set()
    for mode in modes:
        backend = ReadyBackend(config, state_dir, {hub.name: mode}, **(options or {}))
        found.add(backend.config_hash(hub))
    return found


def _reason(entry: HubReady) -> str:
    if entry.event is None:
        return f"ready mode ends: {entry.seats} user placeholders again (not gated: only ready mode changes)"
    return (
        f"ready mode for event {entry.event} ({entry.why}): {entry.seats} user placeholders "
        "(not gated: only ready mode changes)"
    )


def _record_windows(store: Store, entry: HubReady, ready: ReadySeats) -> None:
    for change in entry.transitions:
        if change.kind == "end":
            stored.end_window(store, entry.hub, SCHEDULE)
        else:
            details = {"seats": ready.seats, "placeholders": entry.seats, "backend": "kubernetes"}
            stored.start_window(store, entry.hub, change.event, SCHEDULE, details)


def _note_result(store: Store, hub: str, entry: HubReady) -> None:
    """The deploy's result on the hub's newest window (the one just opened, or the one just closed)."""
    found = stored.windows(store, hub, limit=1)
    if found and entry.outcome is not None:
        stored.update_window(
            store,
            found[0].id,
            {"deploy": entry.outcome.result, "deploy_message": entry.outcome.message[:500]},
        )


def run(config: FleetConfig, state_dir: Path, store: Store, now: datetime, **kwargs: Any) -> ApplyReport:
    return asyncio.run(apply_ready_modes(config, state_dir, store, now, **kwargs))

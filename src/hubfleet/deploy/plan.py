"""Plan: compare each hub's desired-state hash with what was last deployed, and say why it differs.

What a hub depends on is derived from the loaded model (its rendered configuration, the settings and files it
was built from), never from hand-kept path patterns, so a shared file that changes nothing for a hub leaves
that hub `unchanged`.
"""

from __future__ import annotations

import difflib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hubfleet.backends import backends_for
from hubfleet.backends.base import Backend
from hubfleet.config.fleet import FleetConfig
from hubfleet.deploy.state import settings_snapshot, source_files
from hubfleet.settings import UserError
from hubfleet.store.api import DeploymentRecord, Store

Action = Literal["create", "update", "unchanged", "remove"]
STAGES = ("staging", "prod")
LONG_VALUE = 60


@dataclass
class HubPlan:
    name: str
    community: str
    stage: str
    cluster: str
    kind: str
    """The cluster kind, which picks the backend."""
    action: Action
    reasons: list[str] = field(default_factory=list)
    config_hash: str | None = None
    rendered: str | None = None
    diff: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "community": self.community,
            "stage": self.stage,
            "cluster": self.cluster,
            "action": self.action,
            "reasons": self.reasons,
        }


@dataclass
class Plan:
    hubs: list[HubPlan]

    @property
    def changes(self) -> list[HubPlan]:
        return [h for h in self.hubs if h.action != "unchanged"]

    def waves(self) -> list[list[str]]:
        """Rollout order: every changed staging hub, then every changed prod hub."""
        return [[h.name for h in self.changes if h.stage == stage] for stage in STAGES]

    def to_json(self) -> dict[str, Any]:
        return {"hubs": [h.to_json() for h in self.hubs], "waves": self.waves()}

    def github_matrix(self) -> str:
        """Lines for $GITHUB_OUTPUT: one matrix per wave (`fromJSON(needs.plan.outputs.staging)`)."""
        lines = []
        for stage in STAGES:
            include = [
                {"hub": h.name, "community": h.community, "cluster": h.cluster, "action": h.action}
                for h in self.changes
                if h.stage == stage
            ]
            lines.append(f"{stage}={json.dumps({'include': include}, separators=(',', ':'))}")
            lines.append(f"{stage}-count={len(include)}")
        return "\n".join(lines)


def make_plan(
    fleet: FleetConfig,
    state_dir: Path,
    store: Store,
    *,
    changed_files: set[str] | None = None,
    hubs: set[str] | None = None,
    backends: dict[str, Backend] | None = None,
) -> Plan:
    """Every hub's action. `changed_files` (relative to the fleet) and `hubs` narrow the plan."""
    backends = backends or backends_for(fleet, state_dir)
    deployed = store.deployed()
    entries: list[HubPlan] = []
    for hub in fleet.hubs.values():
        if hubs is not None and hub.name not in hubs:
            continue
        if changed_files is not None and not changed_files & set(source_files(fleet, hub)):
            continue
        kind = fleet.clusters[hub.cluster].kind
        rendered = backends[kind].render(hub)
        desired = backends[kind].config_hash(hub)
        entry = HubPlan(
            hub.name,
            hub.community,
            hub.stage,
            hub.cluster,
            kind,
            "unchanged",
            config_hash=desired,
            rendered=rendered,
        )
        last = deployed.get(hub.name)
        if last is None:
            entry.action = "create"
            entry.reasons = ["not deployed yet"]
            entry.diff = _diff("", rendered, hub.name)
        elif last.config_hash != desired:
            entry.action = "update"
            entry.reasons = reasons(last, settings_snapshot(fleet, hub), rendered)
            entry.diff = _diff(last.rendered or "", rendered, hub.name)
        entries.append(entry)
    for name, last in sorted(deployed.items()):
        if name in fleet.hubs or (hubs is not None and name not in hubs):
            continue
        if changed_files is not None and not changed_files & set((last.settings or {}).get("files", [])):
            continue
        settings = last.settings or {}
        entries.append(
            HubPlan(
                name,
                last.community or "",
                last.stage or "prod",
                str(settings.get("hub", {}).get("cluster", "")),
                str(settings.get("cluster", {}).get("kind", "local")),
                "remove",
                reasons=["no longer in the fleet files"],
                diff=_diff(last.rendered or "", "", name),
            )
        )
    order = {"staging": 0, "prod": 1}
    entries.sort(key=lambda e: (order.get(e.stage, 2), e.community, e.name))
    return Plan(entries)


def reasons(last: DeploymentRecord, now: dict[str, Any], rendered: str) -> list[str]:
    """Which settings changed since the last deployment, as `key: old → new` lines."""
    before = _flatten(last.settings or {})
    after = _flatten(now)
    found = []
    for key in sorted(before.keys() | after.keys()):
        if key.startswith("files") or before.get(key) == after.get(key):
            continue
        old, new = before.get(key, "(unset)"), after.get(key, "(unset)")
        if len(repr(old)) > LONG_VALUE or len(repr(new)) > LONG_VALUE:
            found.append(f"{key} changed")
        else:
            found.append(f"{key}: {_show(old)} → {_show(new)}")
    if not found:
        if last.rendered is not None and last.rendered != rendered:
            found.append("rendered configuration changed (a new hubfleet release renders it differently)")
        else:
            found.append("secret values changed")
    return found


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}." if prefix or key != "hub" else ""))
        return flat
    return {prefix.rstrip("."): data}


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _diff(old: str, new: str, name: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        f"{name} (deployed)",
        f"{name} (desired)",
    )
    return "".join(lines)


def files_changed_since(fleet_root: Path, ref: str) -> set[str]:
    """Files changed between `ref` and the working tree (committed, staged, unstaged and untracked),
    relative to the fleet directory."""

    def git(*args: str) -> str:
        try:
            result = subprocess.run(
                ["git", *args], cwd=fleet_root, capture_output=True, text=True, timeout=60
            )
        except FileNotFoundError:
            raise UserError(
                "git is not installed; install git or pass --changed-files FILE instead"
            ) from None
        if result.returncode != 0:
            raise UserError(f"git {' '.join(args)} failed: {result.stderr.strip().splitlines()[-1:]}")
        return result.stdout

    top = Path(git("rev-parse", "--show-toplevel").strip())
    names = git("diff", "--name-only", ref, "--").splitlines()
    names += git("ls-files", "--others", "--exclude-standard", "--full-name").splitlines()
    return relative_to_fleet(fleet_root, {top / name for name in names}, also_relative_to=top)


def read_changed_files(fleet_root: Path, listing: Path) -> set[str]:
    """A file listing changed paths, one per line (as `git diff --name-only` prints them, from the
    repository top, or relative to the fleet directory)."""
    try:
        lines = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise UserError(f"{listing}: cannot read the list of changed files ({exc.strerror})") from None
    return relative_to_fleet(fleet_root, {Path(line) for line in lines}, also_relative_to=Path.cwd())


def relative_to_fleet(fleet_root: Path, paths: set[Path], also_relative_to: Path) -> set[str]:
    """Normalise paths (absolute, relative to the fleet, or relative to `also_relative_to`) to fleet-relative
    strings; paths outside the fleet are dropped."""
    root = fleet_root.resolve()
    found = set()
    for path in paths:
        candidates = [path] if path.is_absolute() else [root / path, also_relative_to / path]
        for candidate in candidates:
            try:
                found.add(candidate.resolve().relative_to(root).as_posix())
                break
            except ValueError:
                continue
    return found

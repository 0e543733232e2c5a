"""Plan: compare each hub's desired-state hash with what was last deployed, and say why it differs.

What a hub depends on is derived from the loaded model (its rendered configuration, the settings and files it
was built from), never from hand-kept path patterns, so a shared file that changes nothing for a hub leaves
that hub `unchanged`.
"""

from __future__ import annotations

import difflib
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from hubfleet.backends import backends_for
from hubfleet.backends.base import Backend
from hubfleet.clock import utcnow
from hubfleet.config.cache import FleetCache, gc_paused
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.deploy.plan_cache import PlanCache
from hubfleet.deploy.state import settings_snapshot, source_files
from hubfleet.render.caddy import fleet_sites
from hubfleet.render.ready_mode import READY_MARK, upcoming
from hubfleet.runtime.layout import LAYOUT_FILE, layout
from hubfleet.runtime.status_file import read_status
from hubfleet.settings import UserError
from hubfleet.store.api import DeploymentRecord, Store
from hubfleet.store.retirements import RetirementRecord, retirements

Action = Literal["create", "update", "unchanged", "remove", "retired"]
"""`retired`: the hub is retired (`hubfleet retire`) and is never deployed again, though its file is there."""
STAGES = ("staging", "prod")
LONG_VALUE = 60
NEXT_UP = "takes effect at `hubfleet front-door reload` or the next `hubfleet up`"


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
    data: dict[str, Any] | None = None
    """For a removed or retired hub: what happens to its data (`retirement`, `kept_in`, `note`)."""
    cluster_gate: str | None = None
    """For a prod hub: its cluster's `staging_hub`, deployed (when changed) and checked before it changes."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "community": self.community,
            "stage": self.stage,
            "cluster": self.cluster,
            "action": self.action,
            "reasons": self.reasons,
            **({"data": self.data} if self.data is not None else {}),
            **({"cluster_gate": self.cluster_gate} if self.cluster_gate is not None else {}),
        }


@dataclass
class FrontDoorPlan:
    """What the front door would serve per the fleet files against what the running daemon's serves.

    Hub addresses change with the deploy of their hub (the daemon reloads the front door); the console's
    address and the front door's own settings at `hubfleet front-door reload` or the next `hubfleet up`."""

    wanted: dict[str, str]
    """Public URL -> what it serves (a hub's name, or `console`), from the fleet files."""
    daemon: bool
    """Whether a daemon runs (without one nothing is compared)."""
    state: str | None = None
    """The running front door's state (None: the daemon runs none)."""
    error: str = ""
    add: list[tuple[str, str]] = field(default_factory=list)
    remove: list[tuple[str, str]] = field(default_factory=list)
    change: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(setting, running, wanted, when it takes effect)."""

    @property
    def changed(self) -> bool:
        return bool(self.add or self.remove or self.change)

    def moves(self) -> dict[str, tuple[str, str]]:
        """Hub -> (address it is served at now, address it would be served at) for hubs that move."""
        now = {served: url for url, served in self.remove}
        return {served: (now[served], url) for url, served in self.add if served in now}

    def lines(self) -> list[str]:
        if not self.daemon:
            return [
                f"front door: would serve {len(self.wanted)} address(es) (no daemon runs; `hubfleet up` "
                "starts it)"
            ]
        lines = []
        if self.state not in (None, "running"):
            lines.append(f"front door: ! the running front door is {self.state}: {self.error or 'no error'}")
        lines += [f"front door: + {url} -> {served}" + _console_note(served) for url, served in self.add]
        lines += [f"front door: - {url} -> {served}" + _console_note(served) for url, served in self.remove]
        lines += [f"front door: ~ {key}: {old} -> {new} ({when})" for key, old, new, when in self.change]
        return lines or ["front door: no changes"]

    def to_json(self) -> dict[str, Any]:
        return {
            "daemon": self.daemon,
            "state": self.state,
            "would_serve": self.wanted,
            "add": [{"url": url, "serves": served} for url, served in self.add],
            "remove": [{"url": url, "serves": served} for url, served in self.remove],
            "change": [
                {"setting": key, "running": old, "wanted": new, "when": when}
                for key, old, new, when in self.change
            ],
            "lines": self.lines(),
        }


def _console_note(served: str) -> str:
    return f" ({NEXT_UP})" if served == "console" else ""


def plan_front_door(
    fleet: FleetConfig, daemon: dict[str, Any] | None, hubs: set[str] | None = None
) -> FrontDoorPlan | None:
    """The front door's changes (`daemon`: daemon.json of the running daemon, None when none runs); None
    when neither the fleet files nor the running daemon have a front door. `hubs` narrows the addresses."""
    settings = fleet.settings.front_door
    running = (daemon or {}).get("front_door")
    running = running if isinstance(running, dict) else None
    if settings is None and running is None:
        return None
    wanted: dict[str, str] = {}
    if settings is not None:
        for site in fleet_sites(fleet):
            wanted[fleet.front_door_origin(site.host) + site.path + "/"] = site.hub
        if settings.console_domain:
            wanted[fleet.front_door_origin(settings.console_domain) + "/"] = "console"
    if hubs is not None:
        wanted = {url: served for url, served in wanted.items() if served in hubs}
    result = FrontDoorPlan(dict(sorted(wanted.items())), daemon=daemon is not None)
    if daemon is None:
        return result
    if running is None:
        result.change.append(("front door", "none", f"{len(wanted)} address(es)", NEXT_UP))
        result.add = sorted(wanted.items())
        return result
    result.state = str(running.get("state") or "unknown")
    result.error = str(running.get("error") or "")
    serving: dict[str, str] = {str(k): str(v) for k, v in (running.get("sites") or {}).items()}
    if hubs is not None:
        serving = {url: served for url, served in serving.items() if served in hubs}
    if settings is None:
        result.change.append(("front door", f"{len(serving)} address(es)", "none", NEXT_UP))
        result.remove = sorted(serving.items())
        return result
    # compared without the port: a new https_port is one line, not every address twice
    now = {_without_port(url): (url, served) for url, served in serving.items()}
    then = {_without_port(url): (url, served) for url, served in wanted.items()}
    for key in sorted(then.keys() | now.keys()):
        if key in now and (key not in then or then[key][1] != now[key][1]):
            result.remove.append(now[key])
        if key in then and (key not in now or then[key][1] != now[key][1]):
            result.add.append(then[key])
    ports = sorted({urlsplit(url).port or 443 for url in serving})
    if ports and ports != [settings.https_port]:
        old = ", ".join(str(p) for p in ports)
        result.change.append(("https_port", old, str(settings.https_port), NEXT_UP))
    certificates = str(running.get("certificates") or "")
    if certificates and certificates != settings.certificates.source:
        result.change.append(("certificates", certificates, settings.certificates.source, NEXT_UP))
    return result


def _without_port(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{parts.path}"


READY_DAYS = 7
"""`hubfleet plan` lists the ready-mode windows open now or opening within this many days."""


@dataclass(frozen=True)
class ReadyWindowPlan:
    """A scheduled ready-mode window (render/ready_mode.py): when the hub is warm for which event."""

    hub: str
    event: str
    ready_from: str
    end: str
    seats: int | None
    """Kubernetes user placeholders; None on a local hub (the daemon warms its template and accounts)."""

    def line(self) -> str:
        warm = f"{self.seats} user placeholders" if self.seats is not None else "template and accounts warmed"
        return f"ready mode: {self.hub}: event {self.event}, {self.ready_from} – {self.end} ({warm})"

    def to_json(self) -> dict[str, Any]:
        return {
            "hub": self.hub,
            "event": self.event,
            "from": self.ready_from,
            "to": self.end,
            "seats": self.seats,
        }


def ready_windows(fleet: FleetConfig, hubs: set[str] | None = None, now: Any = None) -> list[ReadyWindowPlan]:
    found = []
    for hub, event, seats in upcoming(fleet, now or utcnow(), READY_DAYS):
        if hubs is None or hub in hubs:
            found.append(
                ReadyWindowPlan(hub, event.name, event.ready_from().isoformat(), event.end.isoformat(), seats)
            )
    return found


@dataclass
class Plan:
    hubs: list[HubPlan]
    front_door: FrontDoorPlan | None = None
    ready: list[ReadyWindowPlan] = field(default_factory=list)
    """Ready-mode windows open now or within READY_DAYS (additive: they change no hub's action)."""

    @property
    def changes(self) -> list[HubPlan]:
        """What a deploy does: a retired hub is never deployed."""
        return [h for h in self.hubs if h.action not in ("unchanged", "retired")]

    @property
    def retired(self) -> list[HubPlan]:
        return [h for h in self.hubs if h.action == "retired"]

    def waves(self) -> list[list[str]]:
        """Rollout order: every changed staging hub, then every changed prod hub."""
        return [[h.name for h in self.changes if h.stage == stage] for stage in STAGES]

    def cluster_gates(self) -> dict[str, list[str]]:
        """Cluster staging hub -> the changed prod hubs it gates (it is checked before they change)."""
        gates: dict[str, list[str]] = {}
        for entry in self.changes:
            if entry.stage == "prod" and entry.cluster_gate is not None and entry.action != "remove":
                gates.setdefault(entry.cluster_gate, []).append(entry.name)
        return gates

    def to_json(self) -> dict[str, Any]:
        return {
            "hubs": [h.to_json() for h in self.hubs],
            "waves": self.waves(),
            **({"cluster_gates": self.cluster_gates()} if self.cluster_gates() else {}),
            "front_door": self.front_door.to_json() if self.front_door is not None else None,
            "ready_mode": [window.to_json() for window in self.ready],
        }

    def github_matrix(self) -> str:
        """Lines for $GITHUB_OUTPUT: one matrix per wave (`fromJSON(needs.plan.outputs.staging)`)."""
        lines = []
        for stage in STAGES:
            include = [
                {"hub": h.name, "community": h.community, "cluster": h.cluster, "action": h.action}
                | ({"cluster_gate": h.cluster_gate} if h.cluster_gate is not None else {})
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
    cache: FleetCache | None = None,
) -> Plan:
    """Every hub's action. `changed_files` (relative to the fleet) and `hubs` narrow the plan. With a `cache`
    (the one the fleet was loaded with), a hub whose inputs are those of a hash it deployed is not rendered
    again (deploy/plan_cache.py)."""
    with gc_paused():
        return _make_plan(fleet, state_dir, store, changed_files, hubs, backends, cache)


def _make_plan(
    fleet: FleetConfig,
    state_dir: Path,
    store: Store,
    changed_files: set[str] | None,
    hubs: set[str] | None,
    backends: dict[str, Backend] | None,
    cache: FleetCache | None,
) -> Plan:
    backends = backends or backends_for(fleet, state_dir)
    deployed = store.deployed()
    retired = retirements(store)
    hashes = PlanCache(cache, fleet, state_dir) if cache is not None else None
    entries: list[HubPlan] = []
    for hub in fleet.hubs.values():
        if hubs is not None and hub.name not in hubs:
            continue
        if changed_files is not None and not changed_files & set(source_files(fleet, hub)):
            continue
        kind = fleet.clusters[hub.cluster].kind
        rendered, desired = _render(backends[kind], hub, kind, deployed.get(hub.name), hashes)
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
        if hub.name in retired:
            entry.action = "retired"
            entry.reasons = [f"{retired[hub.name].describe()}; not deployed: remove its hub file"]
            entry.data = {"retirement": retired[hub.name].to_json()}
        elif last is None:
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
        kind = str(settings.get("cluster", {}).get("kind", "local"))
        note, data = removed_data(state_dir, name, kind, retired.get(name))
        entries.append(
            HubPlan(
                name,
                last.community or "",
                last.stage or "prod",
                str(settings.get("hub", {}).get("cluster", "")),
                kind,
                "remove",
                reasons=["no longer in the fleet files", note],
                diff=_diff(last.rendered or "", "", name),
                data=data,
            )
        )
    _add_cluster_gates(fleet, entries, deployed, backends, set(retired))
    order = {"staging": 0, "prod": 1}
    entries.sort(key=lambda e: (order.get(e.stage, 2), e.community, e.name))
    door = plan_front_door(fleet, read_status(state_dir), hubs)
    if door is not None:  # fleet.yaml's front_door moved a hub: say so rather than "rendered ... changed"
        moved = door.moves()
        for entry in entries:
            if entry.action == "update" and entry.name in moved and entry.reasons[-1].startswith("rendered"):
                old, new = moved[entry.name]
                entry.reasons[-1] = f"front door address: {old} → {new}"
    if cache is not None:
        cache.save()
    return Plan(entries, front_door=door, ready=ready_windows(fleet, hubs))


def _render(
    backend: Backend, hub: Hub, kind: str, last: DeploymentRecord | None, hashes: PlanCache | None
) -> tuple[str, str]:
    """The hub's rendered text and config hash: from the deployed record when the cache says its inputs
    give the deployed hash (nothing to render), else rendered (and the hash remembered)."""
    if hashes is None:
        return backend.render_and_hash(hub)
    key, cached = hashes.lookup(hub, kind)
    if cached is not None and last is not None and last.rendered is not None and last.config_hash == cached:
        return last.rendered, cached
    rendered, desired = backend.render_and_hash(hub)
    hashes.remember(key, desired)
    return rendered, desired


def _add_cluster_gates(
    fleet: FleetConfig,
    entries: list[HubPlan],
    deployed: dict[str, DeploymentRecord],
    backends: dict[str, Backend],
    retired: set[str],
) -> None:
    """Mark each prod hub of a cluster with a `staging_hub` as gated by it, and put a changed gate into the
    plan when a narrowed plan (`--hub`, `--since`) left it out: it deploys before its prod hubs change."""
    planned = {entry.name for entry in entries}
    for entry in list(entries):
        cluster = fleet.clusters.get(entry.cluster)
        gate = cluster.staging_hub if cluster is not None else None
        if entry.stage != "prod" or gate is None or gate not in fleet.hubs:
            continue
        entry.cluster_gate = gate
        if gate in retired and entry.action not in ("unchanged", "retired", "remove"):
            entry.reasons.append(
                f"its cluster's staging hub {gate} is retired, so its check fails and this hub waits: name "
                f"another staging hub in {fleet.cluster_files.get(entry.cluster, 'the cluster file')}"
            )
        if gate in planned or gate in retired or entry.action in ("unchanged", "retired", "remove"):
            continue
        hub = fleet.hubs[gate]
        backend = backends[fleet.clusters[hub.cluster].kind]
        rendered, desired = backend.render_and_hash(hub)
        last = deployed.get(gate)
        if last is not None and last.config_hash == desired:
            continue  # unchanged: the rollout checks it before the prod hubs
        action: Action = "create" if last is None else "update"
        why = "not deployed yet" if last is None else "its configuration changed"
        entries.append(
            HubPlan(
                gate,
                hub.community,
                hub.stage,
                hub.cluster,
                fleet.clusters[hub.cluster].kind,
                action,
                reasons=[f"staging hub of cluster {hub.cluster}, deployed before its prod hubs: {why}"],
                config_hash=desired,
                rendered=rendered,
                diff=_diff((last.rendered or "") if last is not None else "", rendered, gate),
            )
        )
        planned.add(gate)


def removed_data(
    state_dir: Path, name: str, kind: str, retired: RetirementRecord | None
) -> tuple[str, dict[str, Any]]:
    """What happens to a removed hub's data, in one line and as JSON."""
    if retired is not None:
        return retired.describe(), {"retirement": retired.to_json()}
    if kind != "local":
        note = (
            "its volumes stay on the cluster until deleted there; not retired (no archives for its community)"
        )
        return note, {"retirement": None, "kept_in": [], "note": note}
    kept = ["the fleet's data directory"]
    if (state_dir / LAYOUT_FILE).exists():  # never made by a plan: it only reads
        where = layout(state_dir)
        kept = [str(where.hub_data(name)), str(where.homes(name))]
    note = (
        f"data kept in {' and '.join(kept)} (deleted by `hubfleet deploy --purge`); not retired: run "
        f"`hubfleet retire {name}` to archive it for its community"
    )
    return note, {"retirement": None, "kept_in": kept, "note": note}


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
        logo = _logo_change(last.rendered, rendered)
        ready = _ready_change(last.rendered, rendered)
        if logo:
            found.append(logo)
        elif ready:
            found.append(ready)
        elif last.rendered is not None and last.rendered != rendered:
            found.append("rendered configuration changed (a new hubfleet release renders it differently)")
        else:
            found.append("secret values changed")
    return found


_LOGO_SHA = re.compile(r"hubfleet_logo_sha256'?:\s*'?([0-9a-f]{64})")


def _logo_change(before: str | None, after: str) -> str | None:
    """The community's logo file changed (its content is not a setting: the rendered config holds its
    sha256, render/branding.py)."""
    old, new = (_LOGO_SHA.search(text or "") for text in (before, after))
    if old is None or new is None or old[1] == new[1]:
        return None
    return f"branding.logo: the logo file's content changed (sha256 {old[1][:12]}… → {new[1][:12]}…)"


def _ready_mark(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.startswith(f"# {READY_MARK}"):
            return line.removeprefix(f"# {READY_MARK}").strip()
        if not line.startswith("#"):
            break
    return ""


def _ready_change(before: str | None, after: str) -> str | None:
    """The hub enters or leaves an event's ready mode (the values' header names it, render/kubernetes.py):
    `hubfleet events apply` deploys this without the staging gate."""
    old, new = _ready_mark(before), _ready_mark(after)
    if old == new:
        return None
    if new:
        return f"ready mode: {new}" + (f" (was: {old})" if old else "")
    return f"ready mode ends ({old})"


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

"""Runs and watches the local hubs: start in parallel, wait for health, restart with backoff, stop cleanly.

One asyncio task per hub; the supervisor's view of every hub is written to <state>/daemon.json so that
`hubfleet status` and `hubfleet down` in other processes can read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from hubfleet.backends.hub_data import purge_hub
from hubfleet.backends.local import (
    LocalBackend,
    PreparedHub,
    hub_dir,
    hub_endpoint,
    isolation_mode,
    owned_pids,
    port_is_free,
)
from hubfleet.clock import utcnow
from hubfleet.config.fleet import FleetConfig
from hubfleet.daemon.broker import Broker
from hubfleet.daemon.detached import hub_user_pids, stop_leftovers
from hubfleet.daemon.front_door import FrontDoor
from hubfleet.daemon.hub_files import (
    home_name,
    lost_data,
    lost_state,
    plain_env,
    prepare_hub,
    restore_state_files,
)
from hubfleet.daemon.hub_templates import HubTemplate, hub_spec, reason_to_exec
from hubfleet.deploy.audit import deploy_actor, fleet_commit
from hubfleet.deploy.state import record
from hubfleet.isolation.accounts import Account, AccountError
from hubfleet.isolation.cgroups import detect
from hubfleet.isolation.forkserver import Forked
from hubfleet.ports import port_holder
from hubfleet.render.caddy import Site
from hubfleet.runtime.layout import layout, make_state_private, migrate_hub
from hubfleet.runtime.processes import (
    STABLE_AFTER,
    backoff_delay,
    process_tree,
    stop_group,
    terminate_tree,
)
from hubfleet.runtime.status_file import read_recorded_status, write_status
from hubfleet.settings import Settings, UserError
from hubfleet.store.api import Store
from hubfleet.store.retirements import retirement

log = logging.getLogger("hubfleet.supervisor")

HEALTH_TIMEOUT = 120.0
HEALTH_POLL = 0.1
"""Seconds between looks at a starting hub: its log line, then its health."""
MAX_CONSECUTIVE_FAILURES = 5
LOG_TAIL_LINES = 15


def now_iso() -> str:
    return utcnow().isoformat(timespec="seconds")


@dataclass
class HubState:
    name: str
    community: str
    stage: str
    url: str
    state: str = "stopped"  # starting | running | restarting | failed | stopped | held | retired
    pid: int | None = None
    restarts: int = 0
    started_at: str | None = None
    config_hash: str = ""
    error: str = ""
    log_tail: list[str] = field(default_factory=list)
    log_path: str = ""
    warnings: list[str] = field(default_factory=list)
    """What the operator must know about this hub, such as data lost since it last ran."""


def read_log_tail(path: Path, lines: int = LOG_TAIL_LINES, since: int = 0) -> list[str]:
    """The last lines of a hub log written after byte offset `since`."""
    try:
        with path.open("rb") as f:
            f.seek(since)
            data = f.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-lines:]


def _log_says_running(path: Path, offset: int) -> bool:
    return any("JupyterHub is now running" in line for line in read_log_tail(path, lines=400, since=offset))


def hub_helpers(hub_pid: int) -> list[psutil.Process]:
    """The hub's proxy and managed services: its children that are not user servers."""
    try:
        children = psutil.Process(hub_pid).children()
    except psutil.Error:
        return []
    helpers = []
    for child in children:
        with contextlib.suppress(psutil.Error):
            if not any("jupyterhub-singleuser" in part for part in child.cmdline()):
                helpers.append(child)
    return helpers


class Supervisor:
    def __init__(self, fleet: FleetConfig, state_dir: Path, store: Store, hub_names: list[str] | None = None):
        self.fleet = fleet
        self.state_dir = state_dir
        self.store = store
        self.backend = LocalBackend(fleet, state_dir)
        self.layout = layout(state_dir)
        self.mode = isolation_mode()
        self.cgroups = detect() if self.mode == "accounts" else None
        self.broker = Broker(self.layout, self.cgroups, store) if self.mode == "accounts" else None
        names = hub_names if hub_names is not None else [h.name for h in fleet.local_hubs()]
        self.hubs: dict[str, HubState] = {}
        for name in names:
            hub = fleet.hubs[name]
            self._track(name, hub.community, hub.stage)
        forked = self.mode == "accounts" and Settings().hub_start == "fork"
        self.hub_template = HubTemplate(state_dir) if forked else None
        """Hubs are forks of a process that imported JupyterHub once (each runs as its service account)."""
        self._procs: dict[str, asyncio.subprocess.Process | Forked] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._helpers: dict[str, list[psutil.Process]] = {}
        self._current: dict[str, PreparedHub] = {}
        """What each hub runs now; `_previous` is what it ran before its last apply (for rollback)."""
        self._previous: dict[str, PreparedHub] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._stopping = False
        self.ready = False
        self.started_at = now_iso()
        self._audit: tuple[str, str | None] = ("hubfleet up", None)
        """Who ran `up` and the fleet's commit, for the deployments it records (set when it starts)."""
        self.extra_status: dict[str, Any] = {}
        """More daemon facts for daemon.json, such as the `console` URL."""
        self.front_door: FrontDoor | None = None
        """The fleet's HTTPS front door when fleet.yaml has one (started by `up` once the hubs run)."""
        self.console_port: int | None = None
        """The web console's loopback port (set by `up`), which the front door serves at console_domain."""

    def _track(self, name: str, community: str, stage: str) -> None:
        self.hubs.setdefault(
            name,
            HubState(
                name=name,
                community=community,
                stage=stage,
                url="",
                log_path=str(hub_dir(self.state_dir, name) / "hub.log"),
            ),
        )

    def isolation(self) -> str:
        """One line for `up` and daemon.json: who runs what, and which limits hold."""
        if self.mode == "single":
            why = "hubfleet is not root" if os.geteuid() != 0 else "HUBFLEET_ISOLATION=single"
            return (
                f"single-account mode ({why}): every hub and user server runs as uid {os.geteuid()}; "
                "no per-user accounts, resource limits not enforced"
            )
        limits = self.cgroups.describe() if self.cgroups else "none (no writable control groups)"
        return f"an OS account per hub and per hub user; limits: {limits}"

    def hub_urls(self) -> dict[str, str]:
        """Hub name -> URL of every supervised hub that has one (what the prober probes)."""
        return {name: state.url for name, state in list(self.hubs.items()) if state.url}

    def running_hub_urls(self) -> dict[str, str]:
        """Hub name -> URL (maybe empty) of the hubs running now (what the usage collector asks)."""
        return {name: state.url for name, state in list(self.hubs.items()) if state.state == "running"}

    # ------------------------------------------------------------------ status file

    def snapshot(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "fleet": str(self.fleet.root),
            "state_dir": str(self.state_dir),
            "started_at": self.started_at,
            "ready": self.ready,
            "isolation": self.isolation(),
            **self.extra_status,
            **({"front_door": self.front_door.snapshot()} if self.front_door is not None else {}),
            **({"hub_template": self.hub_template.snapshot()} if self.hub_template is not None else {}),
            "hubs": {name: asdict(state) for name, state in self.hubs.items()},
        }

    def write_status(self) -> None:
        write_status(self.state_dir, self.snapshot())

    def _set(self, name: str, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.hubs[name], key, value)
        self.write_status()

    # ------------------------------------------------------------------ starting

    async def start_all(self) -> None:
        """Start every hub at once and wait until each is healthy or has failed."""
        if self.hub_template is not None:  # its imports overlap what comes before the first hub starts
            self.hub_template.begin()
        await self.recover()
        for name in self.hubs:  # before the state tree turns private, which would strip users' files' modes
            migrate_hub(self.layout, name, home_name)
        make_state_private(self.state_dir)
        self._audit = (deploy_actor(self.fleet.root, "hubfleet up"), fleet_commit(self.fleet.root))
        self.write_status()
        results = await asyncio.gather(
            *(self._start_first(name) for name in self.hubs if not self._keep_retired(name))
        )
        if self.front_door is not None:  # after the hubs: nothing to proxy to before
            await self.front_door.start()
        self.ready = True
        self.write_status()
        del results

    async def recover(self) -> None:
        """Before any hub starts (under the daemon's lock, so no other daemon runs): stop whatever an earlier
        daemon that did not stop cleanly (killed, crashed) left running, so there is never a second set."""
        stale = read_recorded_status(self.state_dir)
        if stale is not None and stale.get("pid") == os.getpid():
            stale = None
        leftovers = await asyncio.to_thread(stop_leftovers, self.state_dir, stale)
        if not leftovers:
            return
        who = f"the previous daemon (pid {stale.get('pid')})" if stale else "a previous daemon"
        lines = []
        if leftovers.stopped:
            servers = [line for line in leftovers.stopped if " jupyterhub-singleuser:" in line]
            lines.append(
                f"{who} did not stop cleanly; stopped what it left running first: {leftovers.summary()}"
                + (
                    f"; {len(servers)} user server(s) among them were stopped: their users start them "
                    "again (homes and files are kept)"
                    if servers
                    else ""
                )
            )
        if leftovers.failed:
            lines.append("could not stop: " + "; ".join(leftovers.failed))
        for line in lines:
            log.warning("%s", line)
        self.extra_status["recovered"] = lines

    def _warn(self, name: str, lines: list[str]) -> None:
        """Tell the operator (daemon.log, the hub's log and state, `up`'s output) what happened to a hub."""
        if not lines:
            return
        state = self.hubs[name]
        with contextlib.suppress(OSError):
            log_path = Path(state.log_path)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("a") as f:
                f.writelines(f"---- hubfleet: WARNING: {line}\n" for line in lines)
        for line in lines:
            log.warning("%s", line)
        self._set(name, warnings=[*state.warnings, *lines])

    def _keep_retired(self, name: str) -> bool:
        """A retired hub stays stopped (at `up`, at a deploy, at a release): marked so, True."""
        retired = retirement(self.store, name)
        if retired is None:
            return False
        self._set(name, state="retired", pid=None, url="", error=retired.describe())
        return True

    def _ran_before(self, name: str) -> bool:
        return self.store.last_deployment(name, result="ok") is not None or bool(self.hubs[name].started_at)

    async def _start_first(self, name: str) -> None:
        hub = self.fleet.hubs[name]
        if self._ran_before(name):
            self._warn(name, lost_state(self.layout, name))
        prepared = self.backend.prepare(hub)
        ok = await self._launch(prepared)
        if ok:
            self._running(prepared)
        # `up` deploys what the files say; recording it keeps the next plan empty.
        record(
            self.store,
            self.fleet,
            hub,
            config_hash=prepared.config_hash,
            rendered=prepared.rendered,
            result="ok" if ok else "failed",
            message=self.hubs[name].error,
            actor=self._audit[0],
            commit=self._audit[1],
        )

    def _running(self, prepared: PreparedHub) -> None:
        """The hub runs `prepared` now: remember it and watch its process."""
        name = prepared.name
        if name in self._current and self._current[name] is not prepared:
            self._previous[name] = self._current[name]
        self._current[name] = prepared
        self._watchers[name] = asyncio.create_task(self._watch(name), name=f"watch-{name}")

    # ------------------------------------------------------------------ deploy operations

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def apply(self, prepared: PreparedHub, community: str, stage: str) -> HubState:
        """Run a new configuration of a hub (or start a new hub). User servers keep running."""
        async with self._lock(prepared.name):
            self._track(prepared.name, community, stage)
            if self._keep_retired(prepared.name):
                return self.hubs[prepared.name]
            await self._halt(prepared.name)
            if prepared.name in self._current:
                self._previous[prepared.name] = self._current.pop(prepared.name)
            if await self._launch(prepared):
                self._running(prepared)
            await self._serve_at_front_door(prepared)
            return self.hubs[prepared.name]

    async def _serve_at_front_door(self, prepared: PreparedHub) -> None:
        """A new or moved hub's address at the front door (a reload that keeps open connections)."""
        if self.front_door is None:
            return
        site = (
            Site(prepared.public_host, prepared.public_path, prepared.port, prepared.name)
            if prepared.public_host
            else None
        )
        if site is not None and self.front_door.sites.get((site.host, site.path)) == site:
            return
        await self.front_door.update(prepared.name, site)
        self.write_status()

    async def reload_front_door(self) -> dict[str, Any]:
        """Read fleet.yaml again and give the front door its settings (certificates, names, ports): started,
        reconfigured in place, or stopped when fleet.yaml no longer has one. Hubs are not touched."""
        from hubfleet.config.validate import load_fleet
        from hubfleet.render.caddy import fleet_sites

        fleet = await asyncio.to_thread(load_fleet, self.fleet.root)
        sites = fleet_sites(fleet, [n for n in self.hubs if n in fleet.hubs], self.console_port)
        if fleet.settings.front_door is None:
            if self.front_door is not None:
                await self.front_door.stop()
                self.front_door = None
        elif self.front_door is None:
            door_log = self.state_dir / "front-door"
            self.front_door = FrontDoor(
                fleet, self.layout, self.backend.secrets, sites, log_dir=door_log, on_change=self.write_status
            )
            await self.front_door.start()
        else:
            await self.front_door.reconfigure(fleet, sites)
        self.write_status()
        return self.front_door.snapshot() if self.front_door is not None else {"state": "off"}

    async def rollback(self, name: str) -> HubState:
        """Go back to what the hub ran before its last apply."""
        async with self._lock(name):
            previous = self._previous.pop(name, None)
            if previous is None:
                self._set(name, state="failed", error="no previous configuration to roll back to")
                return self.hubs[name]
            await self._halt(name)
            if await self._launch(previous):
                self._current[name] = previous
                self._watchers[name] = asyncio.create_task(self._watch(name), name=f"watch-{name}")
            return self.hubs[name]

    async def remove(self, name: str, *, purge: bool = False) -> HubState | None:
        """Stop a hub with its servers; its data stays in the state directory unless `purge`."""
        async with self._lock(name):
            watcher = self._watchers.pop(name, None)
            if watcher:
                watcher.cancel()
            if name in self.hubs:
                await self._stop_process(name, graceful=True)
            self._current.pop(name, None)
            self._previous.pop(name, None)
            state = self.hubs.pop(name, None)
            if self.broker is not None:
                await self.broker.close(name)
            if purge:
                await asyncio.to_thread(purge_hub, self.layout, name)
            if self.front_door is not None:
                await self.front_door.update(name, None)
            self.write_status()
            return state

    async def hold(self, name: str, reason: str) -> HubState:
        """Stop a hub with its servers and keep it stopped until `release`: while its database is restored,
        or once it is retired. Its files and its place in the front door stay."""
        async with self._lock(name):
            watcher = self._watchers.pop(name, None)
            if watcher:
                watcher.cancel()
            await self._stop_process(name, graceful=True)
            if not self._keep_retired(name):
                self._set(name, state="held", pid=None, error=reason)
            log.info("hub %s held: %s", name, reason)
            return self.hubs[name]

    async def release(self, name: str) -> HubState:
        """Start a held hub again, with what it ran before (or what its file says when it never ran)."""
        async with self._lock(name):
            if self._keep_retired(name):
                return self.hubs[name]
            prepared = self._current.get(name) or self.backend.prepare(self.fleet.hubs[name])
            self._set(name, error="")
            if await self._launch(prepared):
                self._running(prepared)
            return self.hubs[name]

    async def _halt(self, name: str) -> None:
        """Stop only the hub process (and its proxy and services): its user servers survive."""
        watcher = self._watchers.pop(name, None)
        if watcher:
            watcher.cancel()
        proc = self._procs.get(name)
        if proc is not None:
            await stop_group(proc, timeout=30)
        terminate_tree([p for p in self._helpers.pop(name, []) if p.is_running()])

    async def _launch(self, prepared: PreparedHub) -> bool:
        """Start the hub process and wait for /hub/health; on failure record the error and log tail."""
        name = prepared.name
        began = time.monotonic()
        self._set(name, state="starting", error="", log_tail=[], config_hash=prepared.config_hash)
        if prepared.blocked:
            self._set(name, state="failed", error=prepared.blocked)
            return False
        if not port_is_free(prepared.port) and not owned_pids(self.layout, name, proxy_only=True):
            self._set(
                name,
                state="failed",
                error=f"port {prepared.port} on 127.0.0.1 is already in use{port_holder(prepared.port)}; "
                f"stop that program or change `port` in {self.fleet.hub_files.get(name, 'the hub file')}",
            )
            return False
        if self._ran_before(name) and (lost := lost_data(self.layout, name)):
            orphans = process_tree(sorted(hub_user_pids(self.layout, name)))
            if orphans:  # servers the new, empty database cannot know: nobody could reach or stop them
                await asyncio.to_thread(terminate_tree, orphans)
                lost.append(f"hub {name}: stopped {len(orphans)} process(es) of its users' orphaned servers")
            self._warn(name, lost)
        prepared.log_path.parent.mkdir(parents=True, exist_ok=True)
        if restored := restore_state_files(prepared):
            log.warning("hub %s: its state files had vanished; written again: %s", name, ", ".join(restored))
        try:
            account = await prepare_hub(self.layout, self.broker, prepared)
        except (AccountError, OSError) as exc:
            self._set(name, state="failed", error=f"could not prepare the hub's account and files: {exc}")
            return False
        self._set(name, url=prepared.url)
        with prepared.log_path.open("ab") as logf:
            offset = logf.tell()
            logf.write(f"---- hubfleet: starting {name} at {now_iso()} ----\n".encode())
        proc = await self._start_hub_process(prepared, account)
        self._procs[name] = proc
        self._set(name, pid=proc.pid, started_at=now_iso())
        launched = time.monotonic()
        log.info("hub %s: process %d started (%.2f s to prepare)", name, proc.pid, launched - began)
        healthy = await self._wait_healthy(proc, prepared, offset)
        if healthy:
            log.info("hub %s: healthy %.2f s after its process started", name, time.monotonic() - launched)
            self._helpers[name] = hub_helpers(proc.pid)
            self._set(name, state="running")
            return True
        if proc.returncode is None:
            await self._stop_process(name, graceful=False)
            reason = f"did not answer {prepared.url}/hub/health within {HEALTH_TIMEOUT:.0f} s"
        else:
            reason = f"exited with code {proc.returncode} while starting"
        self._set(
            name,
            state="failed",
            pid=None,
            error=f"{reason}; log: {prepared.log_path}",
            log_tail=read_log_tail(prepared.log_path, since=offset),
        )
        return False

    async def _start_hub_process(
        self, prepared: PreparedHub, account: Account | None
    ) -> asyncio.subprocess.Process | Forked:
        """The hub's process, in its own session, as its service account: a fork of the hub template when it
        can serve this hub (hub_templates.py), else a fresh `jupyterhub` process; the same either way."""
        env = {**plain_env(), "HOME": str(prepared.data_dir), **prepared.env}
        if self.hub_template is not None and account is not None and not reason_to_exec(account, env):
            spec = hub_spec(prepared.command, prepared.data_dir, env, account)
            forked = await self.hub_template.spawn(spec, prepared.log_path)
            if forked is not None:
                return forked
        run_as = {"user": account.uid, "group": account.gid, "extra_groups": []} if account else {}
        with prepared.log_path.open("ab") as logf:
            return await asyncio.create_subprocess_exec(
                *prepared.command,
                cwd=prepared.data_dir,
                env=env,
                **run_as,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logf,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )

    async def _wait_healthy(
        self, proc: asyncio.subprocess.Process | Forked, prepared: PreparedHub, offset: int
    ) -> bool:
        """Healthy: the hub has started its services (its log says so: JupyterHub answers health before its
        managed services run) and /hub/health answers through the proxy. The log, a file read, is looked at
        first and often; the HTTP request is made only once it says running, so that hubs still starting are
        not slowed by requests they cannot answer yet."""
        deadline = time.monotonic() + HEALTH_TIMEOUT
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline and proc.returncode is None:
                if _log_says_running(prepared.log_path, offset):
                    with contextlib.suppress(httpx.HTTPError):
                        response = await client.get(f"{prepared.url}/hub/health")
                        if response.status_code == 200:
                            return True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), timeout=HEALTH_POLL)
        return False

    # ------------------------------------------------------------------ watching

    async def _watch(self, name: str) -> None:
        """Restart the hub with backoff whenever its process dies, and record each restart."""
        failures = 0
        while not self._stopping:
            proc = self._procs[name]
            began = time.monotonic()
            code = await proc.wait()
            if self._stopping:
                return
            # The dead hub's proxy and services (idle culler) would linger; its user servers stay.
            terminate_tree([p for p in self._helpers.pop(name, []) if p.is_running()])
            if time.monotonic() - began > STABLE_AFTER:
                failures = 0
            failures += 1
            state = self.hubs[name]
            self._set(name, state="restarting", pid=None, restarts=state.restarts + 1)
            self.store.record_restart(
                name, reason=f"hub process exited with code {code}", exit_code=code, attempt=failures
            )
            log.warning("hub %s exited with code %s; restart attempt %d", name, code, failures)
            await asyncio.sleep(backoff_delay(failures))
            if self._stopping:
                return
            while not await self._launch(self._current[name]):
                failures += 1
                if failures >= MAX_CONSECUTIVE_FAILURES or self._stopping:
                    self._set(name, state="failed")
                    return
                await asyncio.sleep(backoff_delay(failures))

    # ------------------------------------------------------------------ stopping

    async def stop_all(self) -> None:
        """Stop every hub with its proxy, user servers and kernels; nothing is left running."""
        self._stopping = True
        for task in self._watchers.values():
            task.cancel()
        if self.front_door is not None:
            await self.front_door.stop()
        await asyncio.gather(*(self._stop_process(name, graceful=True) for name in self.hubs))
        if self.hub_template is not None:
            await self.hub_template.stop()
        if self.broker is not None:  # after the hubs: their shutdown asks it to stop the user servers
            await self.broker.close_all()
        self.write_status()

    async def _stop_process(self, name: str, *, graceful: bool) -> None:
        proc = self._procs.get(name)
        pids = [proc.pid] if proc else []
        pids += owned_pids(self.layout, name)
        tree = process_tree(pids)
        if graceful and proc is not None and proc.returncode is None:
            await self._shutdown_via_api(name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=30)
        leftovers = [p for p in process_tree(pids) + tree if p.is_running()]
        if leftovers:
            terminate_tree(leftovers)
        if proc is not None and proc.returncode is None:
            await proc.wait()
        self._set(name, state="stopped", pid=None)

    async def _shutdown_via_api(self, name: str) -> None:
        """JupyterHub's own shutdown: stops the user servers (and their kernels) and the proxy."""
        try:
            endpoint = hub_endpoint(self.state_dir, name, operator=True)
        except UserError as exc:  # its state files vanished: it is stopped by pid instead
            log.warning("%s", exc)
            return
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient(timeout=5.0) as client:
                await client.post(
                    f"{endpoint.url}/hub/api/shutdown",
                    headers={"Authorization": f"token {endpoint.token}"},
                    json={"servers": True, "proxy": True},
                )

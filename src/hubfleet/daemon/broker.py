"""The privileged part: the only code that creates accounts, starts servers as them and sets their limits.

Each hub runs as its own unprivileged service account and reaches its broker over
`/run/hubfleet/<instance>-<hub>.sock`, a unix socket owned by that account (mode 0600) whose peer is checked
again on every connection. The socket names the hub, so a request can only ever act for that hub's users: the
user must exist in the hub's own database, and a pid is signalled only when it runs as that user's account.
Everything else (account, home, command, limits, PATH) is decided here from the fleet files, never taken from
the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import re
import signal
import socket
import sqlite3
import stat
import struct
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from hubfleet.clock import utcnow
from hubfleet.environment_choice import ChoiceRefused, resolve
from hubfleet.isolation.accounts import (
    AccountError,
    check_username,
    comment_for,
    ensure_account,
    ensure_home,
    home_dirname,
    user_account,
)
from hubfleet.isolation.cgroups import CgroupDriver, Group, Limits, parse_memory
from hubfleet.isolation.environments import CHOICE_REFUSED, ServerSettings, server_settings
from hubfleet.isolation.forkserver import SERVER_PRELOAD, Forked, ForkServer, TemplateError, unforkable
from hubfleet.isolation.launch import launcher_argv
from hubfleet.isolation.quotas import make_home_volume
from hubfleet.isolation.user_postgres import UserDb, UserDbError, server_pids
from hubfleet.isolation.user_postgres import start as start_user_db
from hubfleet.isolation.user_postgres import stop as stop_user_db
from hubfleet.runtime.layout import Layout, make_passable_dir
from hubfleet.store.api import Store

log = logging.getLogger("hubfleet.broker")

REQUEST_LIMIT = 1 << 16
READ_TIMEOUT = 5.0
MAX_IN_FLIGHT = 128
"""Requests one hub may have open at once (above JupyterHub's default of 100 concurrent spawns); more are
refused at once, so a flood costs nothing."""
INTERRUPT_WAIT, TERM_WAIT = 10.0, 5.0
NOTICE_FILE = "LIMIT-REACHED.txt"
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_FIXED_ENV = ("HOME", "USER", "LOGNAME", "SHELL", "PATH")
SERVER_ENTRY = "jupyterhub.singleuser:main"
"""What `jupyterhub-singleuser` runs: a forked server runs it in the template's already-imported Python."""
LISTEN_WAIT, LISTEN_POLL = 12.0, 0.02
"""A start is answered at the latest this long after the request came, listening or not: the hub's call
times out at 30 s, and a user's database or a fresh process on a busy machine may have taken much of it."""
TEMPLATE_RETRY = 30.0
"""A template that failed or died is started again at most this often (its imports cost seconds of CPU)."""
TEMPLATE_DELAY_ENV = "HUBFLEET_SERVER_TEMPLATE_DELAY"


def _template_delay() -> float:
    try:
        return max(0.0, float(os.environ.get(TEMPLATE_DELAY_ENV, "10")))
    except ValueError:
        return 10.0


TEMPLATE_DELAY = _template_delay()
"""A hub's template starts this long after the hub (its seconds of imports would slow the hubs' own start on
a small machine), or at once when a start or ready mode needs it. HUBFLEET_SERVER_TEMPLATE_DELAY sets it
(the tests: most of their fleets never start a server, and the template's ~5 s of CPU were wasted)."""
TEMPLATE_WAIT = 20.0
"""How long a start waits for a template that is still importing before it starts a fresh process instead."""


class Refused(Exception):
    """A request the broker will not carry out; the message goes back to the hub."""


@dataclass
class HubPolicy:
    """What the daemon knows about one hub; nothing in it comes from the hub's requests."""

    hub: str
    hub_uid: int
    limits: Limits
    memory_text: str | None
    db_path: Path
    homes: Path
    log_path: Path
    command: list[str]
    path_env: str
    user_database: bool = False
    """Each user's own PostgreSQL server, started with theirs (isolation/user_postgres.py)."""
    environments: list[dict[str, Any]] = field(default_factory=list)
    """The hub's environments from the fleet files: each start's choice is resolved again against them."""
    spawner: str = "process"
    """`fork`: servers are forked from a template that has imported the server (forkserver.py); `process`:
    each is a fresh `python` through launch.py."""


@dataclass
class _Served:
    policy: HubPolicy
    server: asyncio.Server
    in_flight: int = 0
    children: dict[int, subprocess.Popen[bytes] | Forked] = field(default_factory=dict)
    seen: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per account: the (oom kills, refused forks) already reported."""
    users: dict[str, str] = field(default_factory=dict)
    """Account -> hub username, for the servers started here."""
    memory: dict[str, str] = field(default_factory=dict)
    """Account -> the memory limit of its server's environment, when that sets one (for the notices)."""


class Broker:
    def __init__(self, layout: Layout, cgroups: CgroupDriver | None, store: Store | None = None):
        self.layout = layout
        self.cgroups = cgroups
        self.store = store
        self._hubs: dict[str, _Served] = {}
        self._templates: dict[tuple[str, ...], ForkServer] = {}
        """One template per server command: environments differ only in what the child sets (env, PATH,
        JUPYTER_PATH, options, limits), and every hub's server is the same jupyterhub-singleuser of the
        daemon's own Python environment, so one template serves every hub and environment; a command that
        differed (another Python) would get its own."""
        self._template_tasks: dict[tuple[str, ...], asyncio.Task[None]] = {}
        self._template_tried: dict[tuple[str, ...], float] = {}
        self._template_soon: dict[tuple[str, ...], asyncio.Event] = {}

    # ------------------------------------------------------------------ sockets

    async def serve(self, policy: HubPolicy) -> Path:
        """(Re)open the hub's socket; requests already in flight finish on the old one, and the servers it
        started stay known (to reap them and to watch their limits)."""
        previous = self._hubs.get(policy.hub)
        await self.close(policy.hub)
        path = self.layout.broker_socket(policy.hub)
        make_passable_dir(path.parent)
        path.unlink(missing_ok=True)
        # no umask dance here: the umask is per process, and hubs start while this awaits
        server = await asyncio.start_unix_server(
            lambda r, w: self._handle(policy.hub, r, w), path=str(path), limit=REQUEST_LIMIT
        )
        os.chmod(path, 0o600)
        os.chown(path, policy.hub_uid, -1, follow_symlinks=False)
        served = _Served(policy, server)
        if previous is not None:
            served.children, served.seen, served.users = previous.children, previous.seen, previous.users
            served.memory = previous.memory
        self._hubs[policy.hub] = served
        if policy.spawner == "fork":  # after the hubs' own start: its imports would compete with theirs
            self._start_template(policy, delay=TEMPLATE_DELAY)
        return path

    async def close(self, hub: str) -> None:
        served = self._hubs.pop(hub, None)
        if served is not None:
            served.server.close()
            self.layout.broker_socket(hub).unlink(missing_ok=True)
            await self._stop_unused_templates()

    async def close_all(self) -> None:
        for hub in list(self._hubs):
            await self.close(hub)
        await self._stop_unused_templates()
        self._prune_groups()

    # ------------------------------------------------------------------ fork templates

    def _template_key(self, policy: HubPolicy) -> tuple[str, ...]:
        return tuple(policy.command)

    def _start_template(self, policy: HubPolicy, *, delay: float = 0.0) -> asyncio.Task[None]:
        """The template for the hub's servers, started in the background if it is not up (or has died):
        after `delay` seconds unless something needs it sooner (a start or a warm-up ends the delay)."""
        key = self._template_key(policy)
        soon = self._template_soon.setdefault(key, asyncio.Event())
        if not delay:
            soon.set()
        template = self._templates.get(key)
        if template is None:
            template = ForkServer(
                "servers", SERVER_PRELOAD, log_path=self.layout.state_dir / "fork-template.log"
            )
            self._templates[key] = template
        task = self._template_tasks.get(key)
        now = time.monotonic()
        if task is None or (
            task.done() and not template.running and now - self._template_tried.get(key, 0) > TEMPLATE_RETRY
        ):
            self._template_tried[key] = now
            task = asyncio.create_task(self._run_template(template, soon, delay))
            self._template_tasks[key] = task
        return task

    @staticmethod
    async def _run_template(template: ForkServer, soon: asyncio.Event, delay: float) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(soon.wait(), timeout=delay)
            await template.start()
        except (TemplateError, OSError) as exc:
            log.warning("broker: %s; servers start as fresh processes until it is up", exc)

    async def _template_for(self, policy: HubPolicy) -> ForkServer | None:
        """The running template for the hub's servers, waiting a while for one that is starting; None when
        there is none (the start then runs launch.py, as with `spawner: process`)."""
        task = self._start_template(policy)
        if not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout=TEMPLATE_WAIT)
        template = self._templates.get(self._template_key(policy))
        return template if template is not None and template.running else None

    async def _stop_unused_templates(self) -> None:
        used = {self._template_key(s.policy) for s in self._hubs.values() if s.policy.spawner == "fork"}
        for key in [k for k in self._templates if k not in used]:
            template = self._templates.pop(key)
            task = self._template_tasks.pop(key, None)
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await template.stop()

    def templates(self) -> list[dict[str, Any]]:
        """Each template's state, for status and tests."""
        return [
            {"command": list(key), "pid": t.pid, "running": t.running, "children": len(t.children())}
            for key, t in self._templates.items()
        ]

    async def warm(self, hub: str, environment: str | None, users: list[str]) -> dict[str, Any]:
        """Ready mode: everything before the per-user server is done ahead. The hub's template is up, and each
        user's account, home and (empty) cgroup exist, so a start only forks. `environment` is the event's
        (its limits for the groups); the accounts do not depend on it. Returns what was done."""
        served = self._hubs.get(hub)
        if served is None:
            raise Refused(f"hub {hub} is not served by this daemon")
        policy = served.policy
        done: dict[str, Any] = {"hub": hub, "template": "none", "accounts_created": 0, "accounts_existing": 0,
                                "homes": 0, "cgroups": 0, "refused": []}  # fmt: skip
        if policy.spawner == "fork":
            template = await self._template_for(policy)
            done["template"] = "running" if template is not None else "not running"
        limits = policy.limits
        picked = next((e for e in policy.environments if e.get("slug") == environment), None)
        resources = (picked or {}).get("resources") or {}
        if resources.get("memory_limit") or resources.get("cpu_limit"):
            limits = replace(
                limits,
                memory_bytes=parse_memory(resources["memory_limit"])
                if resources.get("memory_limit")
                else limits.memory_bytes,
                cpu_cores=resources.get("cpu_limit") or limits.cpu_cores,
            )
        comment = comment_for(self.layout.instance, policy.hub, "user")
        make_passable_dir(policy.homes)
        for user in users:
            try:
                user = check_username(user)
            except AccountError as exc:
                done["refused"].append(str(exc))
                continue
            name = self._account_name(policy, user)
            existed = _uid(name) is not None
            home = policy.homes / home_dirname(user)
            try:
                account = await asyncio.to_thread(ensure_account, name, home=home, comment=comment)
            except AccountError as exc:
                done["refused"].append(str(exc))
                continue
            done["accounts_existing" if existed else "accounts_created"] += 1
            if not home.exists():
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(make_home_volume, home)
                await asyncio.to_thread(ensure_home, home, account)
                done["homes"] += 1
            group = self._group(policy, name)
            if group is not None and not group.pids():
                with contextlib.suppress(OSError):
                    group.create(limits)
                    done["cgroups"] += 1
        return done

    def _prune_groups(self) -> None:
        """The fleet's empty group directories (each server's own is removed when it stops)."""
        if self.cgroups is None:
            return
        for base in self.cgroups.bases():
            top = base / "hubfleet" / self.layout.instance
            for directory in [*sorted(p for p in top.glob("*") if p.is_dir()), top]:
                with contextlib.suppress(OSError):  # still holds a group: a server outlives the daemon
                    directory.rmdir()

    async def _handle(self, hub: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = self._hubs.get(hub)
        try:
            if served is None:
                raise Refused("this hub is not served any more")
            _check_peer(writer, served.policy.hub_uid)
            if served.in_flight >= MAX_IN_FLIGHT:
                raise Refused("busy: too many requests from this hub at once")
            served.in_flight += 1
            try:
                line = await asyncio.wait_for(reader.readline(), timeout=READ_TIMEOUT)
                reply = await self._dispatch(served, _parse(line))
            finally:
                served.in_flight -= 1
        except Refused as exc:
            reply = {"ok": False, "error": str(exc)}
        except (ValueError, TimeoutError, asyncio.LimitOverrunError) as exc:
            reply = {"ok": False, "error": f"bad request: {type(exc).__name__}"}
        except Exception:  # never let a request take the daemon down
            log.exception("broker: hub %s: request failed", hub)
            reply = {"ok": False, "error": "internal error in the hubfleet broker; see the daemon log"}
        with contextlib.suppress(OSError):
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
            writer.close()

    async def _dispatch(self, served: _Served, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        try:
            user = check_username(request.get("user"))
        except AccountError as exc:
            raise Refused(str(exc)) from None
        policy = served.policy
        if not await asyncio.to_thread(_hub_has_user, policy.db_path, user):
            raise Refused(f"{user!r} is not a user of hub {policy.hub}")
        if op == "start":
            picked = await self._environment(policy, user, request.get("user_options"))
            return await self._start(
                served, user, _env(request.get("env")), _args(request.get("args")), picked
            )
        pid = request.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
            raise Refused("pid must be a process id")
        if op == "poll":
            return await self._poll(served, user, pid)
        if op == "stop":
            return await self._stop(served, user, pid, now=bool(request.get("now")))
        raise Refused(f"unknown op {op!r}; the broker answers start, poll and stop")

    # ------------------------------------------------------------------ operations

    def _account_name(self, policy: HubPolicy, user: str) -> str:
        return user_account(self.layout.instance, policy.hub, user)

    def _group(self, policy: HubPolicy, account: str) -> Group | None:
        if self.cgroups is None:
            return None
        return self.cgroups.group("hubfleet", self.layout.instance, policy.hub, account)

    async def _environment(self, policy: HubPolicy, user: str, options: object) -> ServerSettings:
        """The user's environment, resolved again with their groups from the hub's database: the hub's word
        on who may pick what is never taken."""
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise Refused("user_options must be an object")
        if not policy.environments and not options:
            return ServerSettings()
        groups = await asyncio.to_thread(_hub_user_groups, policy.db_path, user)
        try:
            return server_settings(resolve(policy.environments, groups, options))
        except ChoiceRefused as exc:
            raise Refused(f"{CHOICE_REFUSED}{exc}") from None

    async def _start(
        self,
        served: _Served,
        user: str,
        env: dict[str, str],
        args: list[str],
        picked: ServerSettings | None = None,
    ) -> dict[str, Any]:
        answer_by = asyncio.get_running_loop().time() + LISTEN_WAIT
        policy = served.policy
        picked = picked or ServerSettings()
        limits = policy.limits
        if picked.memory_limit or picked.cpu_limit:
            limits = replace(
                limits,
                memory_bytes=parse_memory(picked.memory_limit)
                if picked.memory_limit
                else limits.memory_bytes,
                cpu_cores=picked.cpu_limit or limits.cpu_cores,
            )
        name = self._account_name(policy, user)
        home = policy.homes / home_dirname(user)
        comment = comment_for(self.layout.instance, policy.hub, "user")
        account = await asyncio.to_thread(ensure_account, name, home=home, comment=comment)
        make_passable_dir(policy.homes)
        try:  # on btrfs with qgroups on, a new home is a subvolume: home_quota's limit can hold it
            await asyncio.to_thread(make_home_volume, home)
        except OSError as exc:
            log.warning("hub %s: user %s: home made as a plain directory: %s", policy.hub, user, exc)
        await asyncio.to_thread(ensure_home, home, account)
        group = self._group(policy, name)
        procs: list[str] = []
        if group is not None:
            if policy.user_database and group.pids():  # the lost server's database: stopped cleanly first
                await asyncio.to_thread(stop_user_db, self._user_db(policy, user))
            if group.pids():  # a lost server's kernels: never two servers of one user in one group
                await asyncio.to_thread(group.kill_all)
            group.create(limits)
            procs = [str(p) for p in group.procs_files()]
            served.seen[name] = (group.oom_kills(), group.pids_refused())
        served.users[name] = user
        if picked.memory_limit:
            served.memory[name] = picked.memory_limit
        else:
            served.memory.pop(name, None)
        if policy.user_database:
            try:
                env = {**env, **await asyncio.to_thread(start_user_db, self._user_db(policy, user), procs)}
            except (UserDbError, OSError, subprocess.SubprocessError) as exc:
                log.warning("hub %s: user %s: database not started: %s", policy.hub, user, exc)
                raise Refused(f"your database could not be started ({exc}); ask the hub's admins") from None
        spec = {
            "uid": account.uid,
            "gid": account.gid,
            "cgroup_procs": procs,
            "cwd": str(home),
            "env": {
                **env,
                **picked.env,
                "HOME": str(home),
                "USER": name,
                "LOGNAME": name,
                "SHELL": "/bin/bash",
                "PATH": f"{picked.path_head}:{policy.path_env}" if picked.path_head else policy.path_env,
            },
            "argv": [*policy.command, *args, *picked.args],
            "umask": 0o022,
        }
        if policy.spawner == "fork":
            forked = await self._fork(policy, user, spec)
            if forked is not None:
                served.children[forked.pid] = forked
                log.info("hub %s: forked %s's server as %s (pid %d)", policy.hub, user, name, forked.pid)
                await _until_listening(forked, spec["env"], answer_by)
                return {"ok": True, "pid": forked.pid, "account": name}
        with policy.log_path.open("ab") as logf:
            proc = subprocess.Popen(
                launcher_argv(),
                stdin=subprocess.PIPE,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env={"PATH": "/usr/bin:/bin"},
                start_new_session=True,
            )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(spec).encode())
        proc.stdin.close()
        served.children[proc.pid] = proc
        log.info("hub %s: started %s's server as %s (pid %d)", policy.hub, user, name, proc.pid)
        await _until_listening(proc, spec["env"], answer_by)
        return {"ok": True, "pid": proc.pid, "account": name}

    async def _fork(self, policy: HubPolicy, user: str, spec: dict[str, Any]) -> Forked | None:
        """The server forked from the template, or None (with the reason in the log) to start it as a fresh
        process: the template is not up, or the server's environment needs a fresh interpreter."""
        reason = unforkable(spec["env"])
        template = None if reason else await self._template_for(policy)
        if template is not None:
            try:
                return await template.spawn(spec, SERVER_ENTRY, log_path=policy.log_path)
            except (TemplateError, OSError) as exc:
                reason = str(exc)
        log.warning(
            "hub %s: %s's server starts as a fresh process: %s",
            policy.hub,
            user,
            reason or "the fork template is not running",
        )
        return None

    def _user_db(self, policy: HubPolicy, user: str) -> UserDb:
        layout = self.layout
        return UserDb.at(layout.data_dir, layout.state_dir, layout.instance, policy.hub, user)

    async def _poll(self, served: _Served, user: str, pid: int) -> dict[str, Any]:
        policy = served.policy
        name = self._account_name(policy, user)
        ours = pid in served.children
        status = self._exit_status(served, name, pid)
        if status is None:
            served.users.setdefault(name, user)  # a server from before a daemon restart: watch it too
            return {"ok": True, "running": True}
        self._limit_events(served, user, name)
        group = self._group(policy, name)
        db = self._user_db(policy, user) if policy.user_database else None
        others = set(group.pids()) - (server_pids(db) if db else set()) if group else set()
        if ours or not others:  # a wrong pid must not take a live server down
            if db is not None:
                await asyncio.to_thread(stop_user_db, db)
            self._cleanup(served, name)
        return {"ok": True, "running": False, "exit_status": status}

    def _exit_status(self, served: _Served, name: str, pid: int) -> int | None:
        """None while the server runs as the user's account, else its exit status (0 when unknown)."""
        child = served.children.get(pid)
        if child is not None:
            code = child.poll()
            if code is None:
                return None
            served.children.pop(pid, None)
            return code
        if _runs_as(pid, _uid(name)):
            return None
        return 0

    async def _stop(self, served: _Served, user: str, pid: int, *, now: bool) -> dict[str, Any]:
        policy = served.policy
        name = self._account_name(policy, user)
        uid = _uid(name)
        steps = (
            [(signal.SIGTERM, TERM_WAIT)]
            if now
            else [(signal.SIGINT, INTERRUPT_WAIT), (signal.SIGTERM, TERM_WAIT)]
        )
        for sig, wait in steps:
            if self._exit_status(served, name, pid) is not None or not _runs_as(pid, uid):
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            for _ in range(int(wait / 0.2)):
                await asyncio.sleep(0.2)
                if self._exit_status(served, name, pid) is not None:
                    break
        self._limit_events(served, user, name)
        if policy.user_database:  # cleanly, before the group is killed
            await asyncio.to_thread(stop_user_db, self._user_db(policy, user))
        await asyncio.to_thread(self._kill_leftovers, policy, name, uid)
        self._exit_status(served, name, pid)  # reap
        self._cleanup(served, name)
        return {"ok": True}

    def _kill_leftovers(self, policy: HubPolicy, name: str, uid: int | None) -> None:
        """Kernels and anything else the server left: the whole group, or (without cgroups) the account's."""
        group = self._group(policy, name)
        if group is not None:
            group.kill_all()
            return
        if uid is None:
            return
        for proc in psutil.process_iter(["uids"]):
            with contextlib.suppress(psutil.Error):
                if proc.info["uids"] and proc.info["uids"].real == uid:
                    proc.kill()

    def _cleanup(self, served: _Served, name: str) -> None:
        served.users.pop(name, None)
        served.seen.pop(name, None)
        served.memory.pop(name, None)
        group = self._group(served.policy, name)
        if group is not None:
            with contextlib.suppress(OSError):
                group.remove()

    # ------------------------------------------------------------------ limits

    async def watch(self, stop: asyncio.Event, interval: float = 5.0) -> None:
        """Look at every running server's group for kills and refused forks until `stop` is set."""
        while not stop.is_set():
            for served in list(self._hubs.values()):
                if served.policy.spawner == "fork":
                    self._start_template(served.policy, delay=TEMPLATE_DELAY)  # a dead one is started again
                for name, user in list(served.users.items()):
                    try:
                        self._limit_events(served, user, name)
                    except Exception:  # one bad group must not stop the watching of the others
                        log.exception("broker: hub %s: reading %s's limits failed", served.policy.hub, user)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    def _limit_events(self, served: _Served, user: str, name: str) -> list[str]:
        """Kills at the memory limit and forks refused at the process limit since the last look: recorded in
        the store, written to the hub's log and told to the user in a file in their home."""
        policy = served.policy
        group = self._group(policy, name)
        if group is None:
            return []
        try:
            now = (group.oom_kills(), group.pids_refused())
        except OSError:
            return []
        before = served.seen.get(name, now)
        served.seen[name] = now
        messages: list[tuple[str, int, str]] = []
        if (kills := now[0] - before[0]) > 0:
            limit = served.memory.get(name) or policy.memory_text or "the memory limit"
            messages.append(("memory", kills, f"memory limit {limit} reached: {kills} process(es) killed"))
        if (refused := now[1] - before[1]) > 0:
            messages.append(
                (
                    "pids",
                    refused,
                    f"process limit {policy.limits.pids} reached: {refused} new process(es) refused",
                )
            )
        for kind, count, detail in messages:
            log.warning("hub %s: user %s: %s", policy.hub, user, detail)
            with contextlib.suppress(OSError), policy.log_path.open("a") as hub_log:
                hub_log.write(f"[hubfleet broker {utcnow():%Y-%m-%d %H:%M:%S}] user {user}: {detail}\n")
            if self.store is not None:
                self.store.record_limit_event(
                    policy.hub, username=user, kind=kind, detail=detail, count=count
                )
            _tell_user(policy.homes / home_dirname(user), name, detail)
        return [detail for _, _, detail in messages]


async def _until_listening(
    child: subprocess.Popen[bytes] | Forked, env: dict[str, str], deadline: float
) -> None:
    """Return once the server accepts connections on its port (or has ended, or at `deadline`).

    JupyterHub looks for a started server with an exponential backoff (waits drawn from 0-0.2 s, 0-0.4 s,
    0-0.8 s, ... between looks), which adds up to about as long again as a forked server takes to start;
    answered when the server listens, the hub finds it at its first look."""
    port = urlsplit(env.get("JUPYTERHUB_SERVICE_URL", "")).port
    if not port:
        return
    loop = asyncio.get_running_loop()
    while loop.time() < deadline and child.poll() is None:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(LISTEN_POLL)
            continue
        writer.close()
        return


# ---------------------------------------------------------------------- request checks


def _parse(line: bytes) -> dict[str, Any]:
    if not line.endswith(b"\n"):
        raise Refused("bad request: one JSON object on one line")
    request = json.loads(line)
    if not isinstance(request, dict):
        raise Refused("bad request: one JSON object on one line")
    return request


def _env(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > 200:
        raise Refused("env must be an object of at most 200 variables")
    env: dict[str, str] = {}
    for key, text in value.items():
        if not (isinstance(key, str) and _ENV_KEY.fullmatch(key)):
            raise Refused(f"env: variable name {str(key)[:40]!r} refused")
        if not isinstance(text, str) or "\x00" in text or len(text) > 16384:
            raise Refused(f"env: value of {key} refused")
        if key not in _FIXED_ENV:  # the broker sets these for the account
            env[key] = text
    return env


def _args(value: object) -> list[str]:
    if not isinstance(value, list) or len(value) > 64:
        raise Refused("args must be a list of at most 64 options")
    for arg in value:
        if not isinstance(arg, str) or not arg.startswith("--") or "\x00" in arg or len(arg) > 4096:
            raise Refused(f"args: {str(arg)[:40]!r} refused; only --options are passed to the server")
    return value


def _check_peer(writer: asyncio.StreamWriter, hub_uid: int) -> None:
    sock: socket.socket | None = writer.get_extra_info("socket")
    if sock is None:
        raise Refused("no peer credentials")
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    if uid not in (hub_uid, 0):
        raise Refused("this socket belongs to another hub's account")


def _hub_has_user(db_path: Path, user: str) -> bool:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)) as conn:
            return conn.execute("SELECT 1 FROM users WHERE name = ?", (user,)).fetchone() is not None
    except sqlite3.Error:
        return False


def _hub_user_groups(db_path: Path, user: str) -> list[str]:
    """The user's groups in the hub's own database (auth.groups, or the OAuth provider's when managed)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)) as conn:
            rows = conn.execute(
                "SELECT groups.name FROM groups JOIN user_group_map ON groups.id = user_group_map.group_id "
                "JOIN users ON users.id = user_group_map.user_id WHERE users.name = ?",
                (user,),
            ).fetchall()
    except sqlite3.Error:
        return []
    return [row[0] for row in rows]


def _uid(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _runs_as(pid: int, uid: int | None) -> bool:
    if uid is None:
        return False
    try:
        proc = psutil.Process(pid)
        return proc.uids().real == uid and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _tell_user(home: Path, name: str, detail: str) -> None:
    """Append the reason to a file in the user's home, never following a link the user may have planted."""
    try:
        account = pwd.getpwnam(name)
        fd = os.open(
            home / NOTICE_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644
        )
    except (KeyError, OSError):
        return
    with os.fdopen(fd, "a") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid not in (0, account.pw_uid):
            return
        os.fchown(fd, account.pw_uid, account.pw_gid)
        f.write(
            f"{utcnow():%Y-%m-%d %H:%M} UTC: {detail}. Your server keeps running; restart the kernel and "
            "use less, or ask your hub's administrators for a larger limit.\n"
        )

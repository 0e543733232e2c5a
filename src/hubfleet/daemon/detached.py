"""The daemon as a process of its own: a lock keeps it to one per state dir; `up --detach` starts it in its
own session (`python -m hubfleet.up`) and `down` stops it, and whatever it left behind, by pid.

What a fleet left behind (a killed daemon's hubs, proxies a hub restarted on its own, orphaned user servers
and kernels) is found by its records (daemon.json, the hubs' pid files and databases) and, as root, by its OS
accounts: every process running as one of this fleet instance's hub or user accounts is the fleet's. Without
root, the fleet's programs working inside its data directory are."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from hubfleet.backends.local import owned_pids
from hubfleet.isolation.accounts import fleet_accounts
from hubfleet.runtime.layout import BROKER_DIR, LAYOUT_FILE, Layout, layout
from hubfleet.runtime.processes import pid_alive, process_tree, terminate_tree, wait_gone
from hubfleet.runtime.status_file import read_recorded_status, read_status, remove_status
from hubfleet.settings import UserError

LOCK_FILE = "daemon.lock"
LOG_FILE = "daemon.log"


@contextmanager
def daemon_lock(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / LOCK_FILE).open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            status = read_status(state_dir)
            pid = f" (daemon pid {status['pid']})" if status else ""
            raise UserError(
                f"the fleet is already up{pid} with state in {state_dir}; "
                "see `hubfleet status`, or stop it with `hubfleet down`"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def lock_holder(state_dir: Path) -> bool:
    """Whether a daemon holds the state dir's lock now."""
    try:
        with (state_dir / LOCK_FILE).open("a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(lock, fcntl.LOCK_UN)
            return False
    except BlockingIOError:
        return True
    except OSError:
        return False


def start_detached(fleet_dir: Path, state_dir: Path, timeout: float = 300) -> dict[str, Any]:
    """Start the daemon in its own session and wait until every hub is up or has failed.
    A daemon.json a killed daemon left stays: the new daemon stops what it names before starting hubs."""
    if status := read_status(state_dir):
        raise UserError(
            f"the fleet is already up (daemon pid {status['pid']}); "
            "see `hubfleet status` or run `hubfleet down`"
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / LOG_FILE
    with log_path.open("ab") as logf:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hubfleet.up",
                "--fleet",
                str(fleet_dir),
                "--state-dir",
                str(state_dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            other = read_status(state_dir)
            if other and other.get("pid") != proc.pid:
                raise UserError(
                    f"the fleet is already up: another `hubfleet up` started it at the same time (daemon pid "
                    f"{other['pid']}); this one exits. See `hubfleet status`, or stop it with `hubfleet down`"
                )
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-10:])
            raise UserError(f"the hubfleet daemon exited with code {proc.returncode}; {log_path}:\n{tail}")
        status = read_status(state_dir)
        if status and status.get("ready") and status.get("pid") == proc.pid:
            return status
        time.sleep(0.2)
    raise UserError(f"the fleet did not come up within {timeout:.0f} s; see {log_path} and `hubfleet status`")


def stop_detached(state_dir: Path, timeout: float = 90) -> tuple[dict[str, Any] | None, Leftovers]:
    """Stop a detached daemon (SIGTERM and wait), then whatever the fleet still runs: a killed or stuck
    daemon's hubs, proxies a hub restarted on its own, orphaned servers and kernels. Returns the daemon's
    last status (None when there was none) and what was stopped besides (and what could not be)."""
    status = read_recorded_status(state_dir)
    pid = status.get("pid") if status else None
    stuck: list[int] = []
    if status is not None and pid_alive(pid) and _is_daemon(pid):
        os.kill(pid, signal.SIGTERM)
        if not wait_gone(pid, timeout):
            stuck = [pid]
    leftovers = stop_leftovers(state_dir, status, stuck)
    remove_status(state_dir)
    return status, leftovers


class Leftovers:
    """What a sweep found: the processes it stopped and those it could not stop (one line each)."""

    def __init__(self) -> None:
        self.stopped: list[str] = []
        self.failed: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.stopped or self.failed)

    def summary(self) -> str:
        """e.g. '2 jupyterhub, 1 configurable-http-proxy, 1 jupyterhub-singleuser, 1 ipykernel'."""
        counts: dict[str, int] = {}
        for line in self.stopped:
            kind = line.split(" ", 2)[1].rstrip(":")
            counts[kind] = counts.get(kind, 0) + 1
        return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


KNOWN_PROGRAMS = (
    "jupyterhub-singleuser",
    "jupyterhub_idle_culler",
    "configurable-http-proxy",
    "ipykernel",
    "jupyterhub",
    "hubfleet.isolation.launch",
    "caddy",  # the front door; as root it runs as the fleet's hfd- account and is found by that
)


def _kind(proc: psutil.Process) -> str:
    try:
        cmd = " ".join(proc.cmdline())
        name = proc.name()
    except psutil.Error:
        return "process"
    return next((k for k in KNOWN_PROGRAMS if k in cmd), name or "process")


def _is_daemon(pid: int | None) -> bool:
    """A hubfleet daemon (`python -m hubfleet.up` or a foreground `hubfleet up`), not a reused pid."""
    try:
        cmd = " ".join(psutil.Process(pid).cmdline()) if pid else ""
    except psutil.Error:
        return False
    return "hubfleet" in cmd and " up" in cmd or "hubfleet.up" in cmd


def fleet_pids(where: Layout, status: dict[str, Any] | None) -> set[int]:
    """Every live process of the fleet but a running daemon: see the module's docstring."""
    me = os.getpid()
    pids: set[int] = set()
    hubs = set((status or {}).get("hubs", {}))
    for parent in (where.data_dir / "hubs", where.state_dir / "hubs"):
        with contextlib.suppress(OSError):
            hubs |= {p.name for p in parent.iterdir() if p.is_dir()}
    for name in sorted(hubs):
        hub_pid = (status or {}).get("hubs", {}).get(name, {}).get("pid")
        if hub_pid and _runs_in(hub_pid, where.hub_data(name)):
            pids.add(hub_pid)
        pids.update(owned_pids(where, name))
    uids: set[int] = set()
    if os.geteuid() == 0:
        with contextlib.suppress(Exception):  # no account database: the records and directories still tell
            uids = {account.uid for account in fleet_accounts(where.instance)}
    data = str(where.data_dir)
    for proc in psutil.process_iter(["pid", "uids", "cwd", "cmdline"]):
        info = proc.info
        if info["pid"] == me:
            continue
        if uids and info["uids"] and ({info["uids"].real, info["uids"].effective} & uids):
            pids.add(info["pid"])
            continue
        cwd, cmd = info["cwd"] or "", " ".join(info["cmdline"] or [])
        if (cwd == data or cwd.startswith(data + "/")) and any(k in cmd for k in KNOWN_PROGRAMS):
            pids.add(info["pid"])
    return {pid for pid in pids if pid != me}


def hub_user_pids(where: Layout, hub: str) -> set[int]:
    """The processes of one hub's users (servers, kernels): as root those of its user accounts, otherwise the
    servers and kernels working in its homes. For servers the hub no longer knows (its database is gone)."""
    uids: set[int] = set()
    if os.geteuid() == 0:
        with contextlib.suppress(Exception):
            marker = f"hubfleet {where.instance} {hub} user"
            uids = {a.uid for a in fleet_accounts(where.instance) if a.comment == marker}
    homes = str(where.homes(hub))
    pids: set[int] = set()
    for proc in psutil.process_iter(["pid", "uids", "cwd", "cmdline"]):
        info = proc.info
        by_account = bool(uids and info["uids"] and {info["uids"].real, info["uids"].effective} & uids)
        in_homes = (info["cwd"] or "").startswith(homes + "/") and any(
            k in " ".join(info["cmdline"] or []) for k in ("jupyterhub-singleuser", "ipykernel")
        )
        if by_account or in_homes:
            pids.add(info["pid"])
    pids.discard(os.getpid())
    return pids


def _runs_in(pid: int, directory: Path) -> bool:
    try:
        return Path(psutil.Process(pid).cwd()).is_relative_to(directory)
    except (psutil.Error, OSError, ValueError):
        return False


def stop_leftovers(
    state_dir: Path, status: dict[str, Any] | None = None, extra: list[int] | None = None
) -> Leftovers:
    """Stop every process of the fleet (by pid and process group) when no daemon runs for it; a stale
    daemon.json (`status`) names a killed daemon's hubs. Also removes the fleet's stale broker sockets."""
    result = Leftovers()
    if not (state_dir / LAYOUT_FILE).exists():  # never started here: nothing to look for
        return result
    where = layout(state_dir)
    procs = process_tree(sorted(fleet_pids(where, status) | set(extra or [])))
    described = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            described[proc.pid] = f"{proc.pid} {_kind(proc)}: {' '.join(proc.cmdline())[:160]}"
    terminate_tree(procs)
    for proc in procs:
        line = described.get(proc.pid, f"{proc.pid} process:")
        if pid_alive(proc.pid):
            result.failed.append(f"{line} (user {_user(proc)})")
        else:
            result.stopped.append(line)
    for sock in BROKER_DIR.glob(f"{where.instance}-*.sock"):
        with contextlib.suppress(OSError):
            sock.unlink()
    shutil.rmtree(BROKER_DIR / f"{where.instance}-door", ignore_errors=True)  # the front door's admin socket
    return result


def _user(proc: psutil.Process) -> str:
    try:
        return proc.username()
    except (psutil.Error, KeyError):
        return "?"

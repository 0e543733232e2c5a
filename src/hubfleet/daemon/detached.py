"""The daemon as a process of its own: a lock keeps it to one per state dir; `up --detach` starts it in its
own session (`python -m hubfleet.up`) and `down` stops it, and whatever it left behind, by pid."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hubfleet.runtime.layout import layout
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


def start_detached(fleet_dir: Path, state_dir: Path, timeout: float = 300) -> dict[str, Any]:
    """Start the daemon in its own session and wait until every hub is up or has failed."""
    if status := read_status(state_dir):
        raise UserError(
            f"the fleet is already up (daemon pid {status['pid']}); "
            "see `hubfleet status` or run `hubfleet down`"
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    remove_status(state_dir)
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
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-10:])
            raise UserError(f"the hubfleet daemon exited with code {proc.returncode}; {log_path}:\n{tail}")
        status = read_status(state_dir)
        if status and status.get("ready"):
            return status
        time.sleep(0.2)
    raise UserError(f"the fleet did not come up within {timeout:.0f} s; see {log_path} and `hubfleet status`")


def stop_detached(state_dir: Path, timeout: float = 90) -> dict[str, Any] | None:
    """Stop a detached daemon: SIGTERM and wait; if it is stuck, kill it and whatever it left behind."""
    status = read_recorded_status(state_dir)
    if status is None:
        return None
    pid = status.get("pid")
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        if wait_gone(pid, timeout):
            return status
    # The daemon is gone or stuck: stop what it recorded, by pid.
    from hubfleet.backends.local import owned_pids

    pids = [pid] if pid_alive(pid) else []
    for name, hub in status.get("hubs", {}).items():
        if hub.get("pid"):
            pids.append(hub["pid"])
        pids += owned_pids(layout(state_dir), name)
    terminate_tree(process_tree(pids))
    remove_status(state_dir)
    return status

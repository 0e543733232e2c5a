"""The `hubfleet up` daemon: one event loop, one supervisor; a lock file keeps it to one per state dir."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hubfleet.config.fleet import FleetConfig
from hubfleet.console.app import create_app
from hubfleet.console.reload import FleetReloader
from hubfleet.console.server import start_console
from hubfleet.daemon.control import serve_control
from hubfleet.daemon.supervisor import Supervisor
from hubfleet.monitor.anomaly import AnomalyMonitor
from hubfleet.monitor.incidents import make_alerter
from hubfleet.monitor.prober import run_in_daemon
from hubfleet.monitor.usage import start_collector
from hubfleet.runtime.control_client import SOCKET_FILE
from hubfleet.runtime.processes import pid_alive, process_tree, terminate_tree, wait_gone
from hubfleet.runtime.status_file import read_recorded_status, read_status, remove_status
from hubfleet.settings import UserError
from hubfleet.store.api import open_store

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


async def serve(
    fleet: FleetConfig,
    state_dir: Path,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Start every local hub, call on_ready, supervise until `stop` is set (or SIGINT/SIGTERM), stop all."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    store = open_store(state_dir)
    supervisor = Supervisor(fleet, state_dir, store)
    # The HTTP app (/metrics and the web console) listens before any hub starts, so daemon.json names it.
    app = create_app(store, FleetReloader(fleet), state_dir=state_dir, secrets=supervisor.backend.secrets)
    http = await start_console(app, port=fleet.settings.monitoring.metrics_port)
    supervisor.extra_status["console"] = http.url
    control = await serve_control(supervisor, state_dir / SOCKET_FILE)
    tasks: list[asyncio.Task[Any]] = []  # monitoring: usage collector, uptime prober, anomaly rules
    monitor: AnomalyMonitor | None = None
    try:
        await supervisor.start_all()
        monitor = AnomalyMonitor(store, fleet, alerter=make_alerter(fleet, store, supervisor.backend.secrets))
        tasks = [
            start_collector(fleet, store, supervisor.running_hub_urls, state_dir, stop),  # right away
            asyncio.create_task(
                run_in_daemon(fleet, state_dir, store, supervisor.hub_urls, supervisor.backend.secrets),
                name="prober",
            ),
            asyncio.create_task(monitor.run(stop), name="anomalies"),
        ]
        if on_ready:
            on_ready(supervisor.snapshot())
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if monitor is not None:
            await monitor.drain(timeout=5)
        await http.stop()
        control.close()
        (state_dir / SOCKET_FILE).unlink(missing_ok=True)
        await supervisor.stop_all()
        final = supervisor.snapshot()
        remove_status(state_dir)
        store.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return final


def run_foreground(
    fleet: FleetConfig, state_dir: Path, on_ready: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    with daemon_lock(state_dir):
        return asyncio.run(serve(fleet, state_dir, on_ready))


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
                "hubfleet.daemon",
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
    from hubfleet.backends.local import hub_dir, owned_pids

    pids = [pid] if pid_alive(pid) else []
    for name, hub in status.get("hubs", {}).items():
        if hub.get("pid"):
            pids.append(hub["pid"])
        pids += owned_pids(hub_dir(state_dir, name))
    terminate_tree(process_tree(pids))
    remove_status(state_dir)
    return status

"""What `hubfleet up` runs: supervisor, control socket, monitors and console, on one event loop.

This module sits above the daemon, the monitors and the console because it is the one place that joins them:
the daemon's package knows nothing of the console it serves, and each monitor is given only what it needs.
`python -m hubfleet.up` is the detached daemon that `hubfleet up --detach` starts.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hubfleet.backup.retire import run_purges
from hubfleet.backup.user_dbs import sweep_departed
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.validate import load_fleet
from hubfleet.console.app import create_app
from hubfleet.console.reload import FleetReloader
from hubfleet.console.server import start_console
from hubfleet.daemon.backup_schedule import start_backup_schedule
from hubfleet.daemon.control import serve_control
from hubfleet.daemon.cost_watch import start_cost_watch
from hubfleet.daemon.detached import daemon_lock
from hubfleet.daemon.event_reports import start_event_reports
from hubfleet.daemon.event_schedule import CONTROL_OP, EventSchedule, start_event_schedule
from hubfleet.daemon.front_door import FrontDoor
from hubfleet.daemon.supervisor import Supervisor
from hubfleet.daemon.support_intake import start_support_intake
from hubfleet.daemon.support_mail import start_support_mail
from hubfleet.daemon.support_watch import start_support_watch
from hubfleet.monitor.alerts import Alerter
from hubfleet.monitor.anomaly import AnomalyMonitor
from hubfleet.monitor.collector import start_collector
from hubfleet.monitor.disk_usage import start_disk_monitor
from hubfleet.monitor.prober import run_in_daemon
from hubfleet.render.caddy import fleet_sites
from hubfleet.runtime.control_client import SOCKET_FILE
from hubfleet.runtime.status_file import remove_status
from hubfleet.settings import UserError
from hubfleet.store.api import open_store
from hubfleet.store.safety import run_backups


async def serve(
    fleet: FleetConfig,
    state_dir: Path,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Start every local hub, call on_ready, supervise until `stop` is set (or SIGINT/SIGTERM), stop all."""
    stop = stop or asyncio.Event()
    old_umask = os.umask(0o077)  # the state directory's files are the control plane's alone
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    store = open_store(state_dir, check=True)  # a damaged store: one line naming the way back
    supervisor = Supervisor(fleet, state_dir, store)
    secrets = supervisor.backend.secrets
    # The HTTP app (/metrics and the web console) listens before any hub starts, so daemon.json names it.
    app = create_app(store, FleetReloader(fleet), state_dir=state_dir, secrets=secrets)
    http = await start_console(app, port=fleet.settings.monitoring.metrics_port)
    supervisor.extra_status["console"] = http.url
    supervisor.console_port = http.port
    events = EventSchedule(  # ready mode of local hubs; `hubfleet event ready` reaches it by the socket
        FleetReloader(fleet),
        state_dir,
        store,
        lambda: [name for name, hub in supervisor.hubs.items() if hub.state != "retired"],
        supervisor.broker,
        Alerter(fleet, store, secrets),
    )
    control = await serve_control(supervisor, state_dir / SOCKET_FILE, {CONTROL_OP: events.manual})
    tasks: list[asyncio.Task[Any]] = []  # monitoring: usage collector, uptime prober, anomaly rules
    monitor: AnomalyMonitor | None = None
    if fleet.settings.front_door is not None:  # started by start_all once the hubs answer
        sites = fleet_sites(fleet, list(supervisor.hubs), http.port)
        door_log = state_dir / "front-door"
        supervisor.front_door = FrontDoor(
            fleet, supervisor.layout, secrets, sites, log_dir=door_log, on_change=supervisor.write_status
        )
    try:
        await supervisor.start_all()
        monitor = AnomalyMonitor(store, fleet, alerter=Alerter(fleet, store, secrets))
        tasks = [
            start_collector(  # right away; databases of users who left the hub kept, dumped, removed
                fleet,
                store,
                supervisor.running_hub_urls,
                state_dir,
                stop,
                on_users=lambda hub, names: (
                    sweep_departed(supervisor.layout, store, hub, names)
                    if supervisor.broker is not None
                    else None
                ),
            ),
            asyncio.create_task(
                run_in_daemon(
                    fleet,
                    state_dir,
                    store,
                    supervisor.hub_urls,
                    secrets,
                    lambda: (door.fleet, door.snapshot()) if (door := supervisor.front_door) else None,
                ),
                name="prober",
            ),
            asyncio.create_task(monitor.run(stop), name="anomalies"),
            asyncio.create_task(run_backups(store.engine, stop), name="backups"),  # now, then hourly
            start_disk_monitor(fleet, store, supervisor.layout, Alerter(fleet, store, secrets), stop),
            asyncio.create_task(run_purges(fleet, state_dir, store, stop), name="retired-purges"),  # daily
            start_backup_schedule(
                FleetReloader(fleet),  # a hub deployed meanwhile, a changed schedule or password
                state_dir,
                store,
                lambda: [name for name, hub in supervisor.hubs.items() if hub.state != "retired"],
                secrets,
                Alerter(fleet, store, secrets),
                stop,
            ),
            start_event_reports(FleetReloader(fleet), store, secrets, stop),  # once an event is over
            start_support_mail(FleetReloader(fleet), state_dir, store, secrets, stop),  # mail in and out
            start_cost_watch(FleetReloader(fleet), state_dir, store, Alerter(fleet, store, secrets), stop),
            start_support_watch(FleetReloader(fleet), store, Alerter(fleet, store, secrets), stop),  # tickets
            start_support_intake(FleetReloader(fleet), state_dir, store, supervisor.running_hub_urls, stop),
        ]
        tasks.append(start_event_schedule(events, stop))
        if supervisor.broker is not None:  # kills at the memory limit, forks refused at the process limit
            tasks.append(asyncio.create_task(supervisor.broker.watch(stop), name="limits"))
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
        os.umask(old_umask)
    return final


def run_foreground(
    fleet: FleetConfig, state_dir: Path, on_ready: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    with daemon_lock(state_dir):
        return asyncio.run(serve(fleet, state_dir, on_ready))


def main() -> None:
    """Entry point of the detached daemon started by `hubfleet up --detach`."""
    parser = argparse.ArgumentParser(prog="python -m hubfleet.up")
    parser.add_argument("--fleet", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_foreground(load_fleet(args.fleet), args.state_dir)
    except UserError as exc:  # e.g. the metrics port is taken: one line in daemon.log, not a traceback
        logging.getLogger("hubfleet.daemon").error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()

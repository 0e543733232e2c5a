"""`hubfleet export-monitoring`: Prometheus scrape config, alert rules and a Grafana dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from hubfleet.cli.app import app
from hubfleet.cli.common import (
    FleetOption,
    StateDirOption,
    console,
    err_console,
    friendly_errors,
    load_or_explain,
)
from hubfleet.settings import UserError, resolve_fleet_dir, resolve_state_dir


@app.command("export-monitoring")
@friendly_errors
def export_monitoring(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the files into.")],
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    daemon_target: Annotated[
        str | None,
        typer.Option(
            "--daemon-target",
            help="host:port Prometheus scrapes the daemon's /metrics at "
            "(default: 127.0.0.1:<monitoring.metrics_port>).",
        ),
    ] = None,
) -> None:
    """Write prometheus.yml, alert rules and a Grafana dashboard for the fleet (no secrets)."""
    from hubfleet.monitor.export import export_monitoring as export
    from hubfleet.runtime.status_file import read_status

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    target = daemon_target
    if target is None and config.settings.monitoring.metrics_port:
        target = f"127.0.0.1:{config.settings.monitoring.metrics_port}"
    if target is None:
        status = read_status(resolve_state_dir(fleet_dir, state_dir)) or {}
        if not status.get("console"):
            raise UserError(
                "fleet.yaml sets no monitoring.metrics_port, so the daemon's /metrics moves to a new free "
                "port at each start; set monitoring.metrics_port (or pass --daemon-target HOST:PORT) and "
                "export again"
            )
        target = urlsplit(status["console"]).netloc
        err_console.print(
            f"warning: using the running daemon's port ({target}); it changes when the daemon restarts "
            "unless fleet.yaml sets monitoring.metrics_port",
            highlight=False,
        )
    result = export(config, out, target)
    for path in result.files:
        console.print(f"wrote {path}", highlight=False)
    console.print(
        f"create the token files named in {out / 'README.md'} ({len(result.token_files)}: the daemon's "
        "and one per hub); "
        "they are never written by hubfleet",
        highlight=False,
    )

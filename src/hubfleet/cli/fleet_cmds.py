"""`hubfleet up / down / status / token`: run the local hubs of a fleet."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from hubfleet.cli.app import app
from hubfleet.cli.common import (
    FleetOption,
    JsonOption,
    StateDirOption,
    console,
    err_console,
    friendly_errors,
    load_or_explain,
)
from hubfleet.secrets.store import SecretResolver
from hubfleet.settings import UserError, resolve_fleet_dir, resolve_state_dir


def print_hub_table(hubs: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title, title_justify="left")
    backups = any("backup" in hub for hub in hubs)  # `status` has them, `up` not
    for column in ("hub", "community", "stage", "state", "url", "version", "users", "servers", "restarts"):
        table.add_column(column)
    if backups:
        table.add_column("backup")
    colours = {
        "running": "green",
        "failed": "red",
        "starting": "yellow",
        "restarting": "yellow",
        "unsupervised": "yellow",
    }
    for hub in hubs:
        state = hub.get("state", "")
        table.add_row(
            hub["name"],
            hub.get("community", ""),
            hub.get("stage", ""),
            f"[{colours.get(state, 'dim')}]{state}[/]",
            hub.get("url", ""),
            str(hub.get("version") or ""),
            "" if hub.get("users") is None else str(hub["users"]),
            "" if hub.get("running_servers") is None else str(hub["running_servers"]),
            str(hub.get("restarts", 0)),
            *([backup_cell(hub.get("backup"))] if backups else []),
        )
    console.print(table)


def backup_cell(backup: dict[str, Any] | None) -> str:
    """The status table's backup column: age and size of the last good one, never, off, failed or late
    (a failure's reason is printed under the table)."""
    if not backup:
        return ""
    state = backup.get("state", "")
    if state == "failed":
        return "[red]failed[/]"
    if state == "late":
        return f"[yellow]{escape(backup.get('summary', 'late'))}[/]"
    return escape(backup.get("summary") or state)


def report_failures(hubs: list[dict[str, Any]]) -> int:
    """Print each failed hub with the last lines of its log; return how many failed."""
    failed = [h for h in hubs if h.get("state") == "failed"]
    for hub in failed:
        err_console.print(
            f"[red]hub {hub['name']} failed to start:[/] {hub.get('error', '')}", highlight=False
        )
        for line in hub.get("log_tail", []):
            err_console.print(f"    {line}", highlight=False, markup=False)
    return len(failed)


def print_front_door(door: dict[str, Any] | None) -> None:
    """The front door's block of `up` and `status`: its state, each public URL and what it serves, the local
    CA to trust (a curl hint), or why it does not serve; its warnings, one line each (on stderr)."""
    if not door:
        return
    state = str(door.get("state") or "unknown")
    colour = {"running": "green", "failed": "red"}.get(state, "yellow")
    certificates = f" (certificates: {door['certificates']})" if door.get("certificates") else ""
    console.print(f"front door: [{colour}]{state}[/]{escape(certificates)}", highlight=False)
    sites: dict[str, str] = door.get("sites") or {}
    for url, served in sorted(sites.items(), key=lambda item: (item[1] == "console", item[1], item[0])):
        line = f"  console: {url}" if served == "console" else f"  {url} -> {served}"
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if door.get("error"):
        console.print(f"  error: {door['error']}", highlight=False, markup=False, soft_wrap=True)
    elif door.get("local_ca"):
        example = next((url for url, served in sorted(sites.items()) if served != "console"), "")
        target = f" {example}hub/health" if example else ""
        console.print(
            f"  local CA: {door['local_ca']} (trust it, or: curl --cacert {door['local_ca']}{target})",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    for line in door.get("warnings") or []:
        err_console.print(f"warning: {line}", style="yellow", highlight=False, markup=False, soft_wrap=True)


def report_warnings(status: dict[str, Any]) -> None:
    """What the daemon found before starting (a previous daemon's leftovers) and what hubs lost."""
    for line in status.get("recovered", []):
        err_console.print(f"[yellow]warning:[/] {line}", highlight=False)
    for hub in status.get("hubs", {}).values():
        for line in hub.get("warnings", []):
            err_console.print(f"[yellow]warning:[/] {line}", highlight=False)


@app.command()
@friendly_errors
def up(
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Run in the background; stop with `hubfleet down`.")
    ] = False,
) -> None:
    """Validate the fleet, start every local hub, and supervise them (Ctrl-C stops everything)."""
    from hubfleet.daemon.detached import start_detached
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    state = resolve_state_dir(fleet_dir, state_dir)
    if not config.local_hubs():
        raise UserError(f"fleet '{config.settings.name}' has no hubs on a local cluster; nothing to run here")
    # Decrypt the hubs' secrets now (in memory, then dropped) so a missing age identity is one clear error.
    SecretResolver(config).verify(config.local_hubs())
    with open_store(state, check=True):  # a damaged store is one line here, not a detached daemon's log
        pass
    console.print(
        f"starting {len(config.local_hubs())} hub(s) of fleet '{config.settings.name}' (state: {state})"
    )

    if detach:
        from hubfleet.daemon.status import collect_status

        daemon = start_detached(fleet_dir, state)  # ready: hubs and front door started (or failed)
        hubs = asyncio.run(collect_status(config, state))["hubs"]
        print_hub_table(hubs, f"fleet '{config.settings.name}' is up (daemon pid {daemon['pid']})")
        console.print(f"isolation: {daemon.get('isolation', 'unknown')}", highlight=False)
        if daemon.get("console"):
            url = daemon["console"]
            console.print(f"console: {url}  (metrics: {url}/metrics)", highlight=False)
        print_front_door(daemon.get("front_door"))
        report_warnings(daemon)
        if report_failures(list(daemon["hubs"].values())):
            raise typer.Exit(1)
        return

    from hubfleet.up import run_foreground  # the whole daemon (≈ 1.6 s of imports): only in the foreground

    def on_ready(status: dict[str, Any]) -> None:
        hubs = list(status["hubs"].values())
        print_hub_table(hubs, f"fleet '{config.settings.name}' is up")
        console.print(f"isolation: {status.get('isolation', 'unknown')}", highlight=False)
        if status.get("console"):
            url = status["console"]
            console.print(f"console: {url}  (metrics: {url}/metrics)", highlight=False)
        print_front_door(status.get("front_door"))
        report_warnings(status)
        report_failures(hubs)
        console.print("supervising; press Ctrl-C to stop every hub")

    run_foreground(config, state, on_ready)
    console.print("stopped every hub")


@app.command()
@friendly_errors
def down(fleet: FleetOption = None, state_dir: StateDirOption = None) -> None:
    """Stop a fleet started with `hubfleet up --detach`: hubs, proxies, user servers and kernels."""
    from hubfleet.daemon.detached import stop_detached

    fleet_dir = resolve_fleet_dir(fleet)
    state = resolve_state_dir(fleet_dir, state_dir)
    status, leftovers = stop_detached(state)
    if status is None and not leftovers:
        console.print(f"the fleet is not up (no daemon for {state})")
        return
    if status is not None:
        console.print(f"stopped {len(status.get('hubs', {}))} hub(s) (daemon pid {status.get('pid')})")
    else:
        console.print(f"no daemon for {state}, but the fleet's processes ran")
    if leftovers.stopped:
        console.print(
            f"also stopped {len(leftovers.stopped)} process(es) left behind: {leftovers.summary()}",
            highlight=False,
        )
    if leftovers.failed:
        err_console.print(f"[red]could not stop {len(leftovers.failed)} process(es):[/]", highlight=False)
        for line in leftovers.failed:
            err_console.print(f"    {line}", highlight=False, markup=False)
        raise typer.Exit(1)


@app.command()
@friendly_errors
def status(
    fleet: FleetOption = None, state_dir: StateDirOption = None, json_output: JsonOption = False
) -> None:
    """Each hub's state, URL, JupyterHub version, users, running servers and restarts."""
    from hubfleet.config.fleet import FleetInvalid
    from hubfleet.config.validate import load_fleet
    from hubfleet.daemon.status import collect_status

    fleet_dir = resolve_fleet_dir(fleet)
    state = resolve_state_dir(fleet_dir, state_dir)
    try:
        config = load_fleet(fleet_dir)
    except FleetInvalid as exc:  # a broken file must not hide what runs: daemon.json needs no fleet files
        _status_of_an_invalid_fleet(state, [str(error) for error in exc.errors], json_output)
        return
    result = asyncio.run(collect_status(config, state))
    if json_output:
        typer.echo(json.dumps(result, indent=2))
        return
    daemon = result["daemon"]
    title = f"fleet '{config.settings.name}': " + (
        f"daemon pid {daemon['pid']} since {daemon['started_at']}" if daemon else "not up (run `hubfleet up`)"
    )
    print_hub_table(result["hubs"], title)
    if result.get("console"):
        console.print(f"console: {result['console']}", highlight=False)
    print_front_door(result.get("front_door"))
    for hub in result["hubs"]:
        notes = [*hub.get("warnings", [])]
        if hub.get("state") == "unsupervised":
            notes.append(f"hub {hub['name']}: {hub['error']}")
        if hub.get("api_error"):
            notes.append(f"hub {hub['name']}: its API could not be asked: {hub['api_error']}")
        failure = (hub.get("backup") or {}).get("last_failure")
        if (hub.get("backup") or {}).get("state") == "failed" and failure:
            notes.append(f"hub {hub['name']}: last backup failed: {failure['error']}")
        for line in notes:
            err_console.print(f"[yellow]warning:[/] {line}", highlight=False)


def _status_of_an_invalid_fleet(state: Path, errors: list[str], json_output: bool) -> None:
    """`status` when the fleet's files do not validate: the local hubs the daemon runs, as daemon.json has
    them (no hub is asked for its figures; Kubernetes hubs are left out), then each problem as a warning."""
    from hubfleet.runtime.status_file import read_status

    daemon = read_status(state)
    columns = ("name", "community", "stage", "url", "state", "pid", "restarts", "started_at", "error")
    hubs = [{key: hub.get(key) for key in columns} for hub in (daemon or {}).get("hubs", {}).values()]
    if json_output:
        result = {
            "daemon": {"pid": daemon["pid"], "started_at": daemon["started_at"]} if daemon else None,
            "console": daemon.get("console") if daemon else None,
            "front_door": daemon.get("front_door") if daemon else None,
            "hubs": hubs,
            "fleet_errors": errors,
        }
        typer.echo(json.dumps(result, indent=2))
    else:
        title = "fleet (its files do not validate; daemon.json shown): " + (
            f"daemon pid {daemon['pid']} since {daemon['started_at']}" if daemon else "not up"
        )
        print_hub_table(hubs, title)
        if daemon and daemon.get("console"):
            console.print(f"console: {daemon['console']}", highlight=False)
        print_front_door((daemon or {}).get("front_door"))
    for error in errors:
        err_console.print(f"warning: {error}", style="yellow", highlight=False, markup=False, soft_wrap=True)
    err_console.print(
        f"warning: {len(errors)} error(s) in the fleet configuration (hubfleet validate); what runs is "
        "unchanged, and `hubfleet deploy` refuses until the files validate",
        style="yellow",
        highlight=False,
        markup=False,
    )


@app.command()
@friendly_errors
def token(
    hub: Annotated[str, typer.Argument(help="Hub name.")],
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Print an API token with admin scopes on HUB (keep it secret)."""
    from hubfleet.backends.local import hub_endpoint

    fleet_dir = resolve_fleet_dir(fleet)
    load_or_explain(fleet_dir).require_hub(hub)
    typer.echo(hub_endpoint(resolve_state_dir(fleet_dir, state_dir), hub, operator=True).token)

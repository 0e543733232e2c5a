"""`hubfleet front-door reload`: give the running front door what fleet.yaml `front_door` says now."""

from __future__ import annotations

import asyncio
import json

import typer

from hubfleet.cli.app import app
from hubfleet.cli.common import FleetOption, JsonOption, StateDirOption, console, err_console, friendly_errors
from hubfleet.settings import resolve_fleet_dir, resolve_state_dir

front_door_app = typer.Typer(
    help="The fleet's HTTPS front door (Caddy) in front of its local hubs.", no_args_is_help=True
)
app.add_typer(front_door_app, name="front-door")


@front_door_app.command("reload")
@friendly_errors
def reload(
    fleet: FleetOption = None, state_dir: StateDirOption = None, json_output: JsonOption = False
) -> None:
    """Apply fleet.yaml `front_door` (a renewed certificate file, another ACME e-mail, new names or ports)
    without restarting hubs. Certificates and names reload in place and keep open connections; a new address
    or port restarts Caddy. Hubs added or removed by `deploy` reach the front door by themselves."""
    from hubfleet.config.validate import load_fleet
    from hubfleet.runtime.control_client import request

    fleet_dir = resolve_fleet_dir(fleet)
    load_fleet(fleet_dir)  # refuse an invalid fleet.yaml here, with its file:line errors, not in the daemon
    reply = asyncio.run(request(resolve_state_dir(fleet_dir, state_dir), {"op": "front_door_reload"}))
    door = reply.get("front_door") or {}
    if json_output:
        typer.echo(json.dumps(door, indent=2))
    elif door.get("state") == "off":
        console.print("front door: off (fleet.yaml has no front_door); Caddy is stopped")
    elif reply.get("ok"):
        console.print(f"front door: {door.get('state')}, {len(door.get('sites', {}))} address(es)")
        for url, what in door.get("sites", {}).items():
            console.print(f"  {url} -> {what}", highlight=False)
    if not reply.get("ok"):
        problem = door.get("reload_error") or door.get("error") or reply.get("error")
        err_console.print(f"[red]front door: {problem}[/]", highlight=False)
    for line in door.get("warnings", []):
        err_console.print(f"[yellow]warning:[/] {line}", highlight=False)
    if not reply.get("ok"):
        raise typer.Exit(1)

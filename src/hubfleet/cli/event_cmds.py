"""`hubfleet events`: the fleet's events, upcoming and past; `hubfleet event ...`: one event (its readiness
test, ready mode by hand, its report), registered by the event_*_cmds modules."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from hubfleet.cli.app import app
from hubfleet.cli.common import (
    FleetOption,
    JsonOption,
    StateDirOption,
    console,
    friendly_errors,
    load_or_explain,
)
from hubfleet.settings import resolve_fleet_dir, resolve_state_dir

event_app = typer.Typer(
    help="One event: its readiness test, ready mode by hand, its report (see `hubfleet events`).",
    no_args_is_help=True,
)
app.add_typer(event_app, name="event")
events_app = typer.Typer(help="The fleet's events (`hubfleet events apply`: ready mode on kubernetes hubs).")
app.add_typer(events_app, name="events")

_PHASE = {
    "upcoming": "upcoming",
    "ready": "[yellow]ready mode[/yellow]",
    "on": "[green]on now[/green]",
    "past": "[dim]past[/dim]",
}


@events_app.callback(invoke_without_command=True)
@friendly_errors
def events(
    ctx: typer.Context,
    hub: Annotated[str | None, typer.Option("--hub", help="Only this hub's events.")] = None,
    past: Annotated[bool, typer.Option("--past/--no-past", help="Also list past events.")] = True,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """The fleet's events by start time: when, how many people, ready mode, the last readiness test."""
    if ctx.invoked_subcommand is not None:  # `hubfleet events apply` (cli/event_ready_cmds.py)
        return
    from hubfleet.clock import utcnow
    from hubfleet.events.catalog import rows
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    if hub is not None:
        config.require_hub(hub)
    with open_store(resolve_state_dir(fleet_dir, state_dir)) as store:
        found = [
            row
            for row in rows(config, store, utcnow())
            if (hub is None or row.hub == hub) and (past or row.phase != "past")
        ]
    if as_json:
        typer.echo(json.dumps({"events": [row.to_json() for row in found]}, indent=2))
        return
    if not found:
        console.print("no events" + (f" on {hub}" if hub else "") + "; list them in hub files (`events:`)")
        return
    table = Table(title="events", title_justify="left")
    for column in ("hub", "event", "start", "end", "people", "arrival", "now", "last test"):
        table.add_column(column)
    for row in found:
        e = row.event
        zone = e.start.tzname() or ""
        test = "—"
        if row.last_test is not None:
            mark = "[green]passed[/green]" if row.last_test.passed else "[red]failed[/red]"
            test = f"{mark} {row.last_test.at:%Y-%m-%d %H:%M} UTC"
        table.add_row(
            row.hub,
            e.display_name or e.name,
            f"{e.start:%Y-%m-%d %H:%M} {zone}",
            f"{e.end:%Y-%m-%d %H:%M}",
            str(e.attendees),
            e.arrival or f"{e.attendees} in 5m",
            _PHASE[row.phase],
            test,
        )
    console.print(table)

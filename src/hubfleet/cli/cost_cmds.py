"""`hubfleet costs`: what each hub, user and group cost in a month, and whether the allocation adds up to the
bill (`hubfleet costs import` is in cli/cost_import_cmds.py)."""

from __future__ import annotations

import typer

from hubfleet.cli.app import app

costs_app = typer.Typer(help="Costs: import billing exports; what each community, hub, user and group cost.")
app.add_typer(costs_app, name="costs")


@costs_app.callback(invoke_without_command=True)
def costs(ctx: typer.Context) -> None:
    """A month's costs per community, hub, user or group."""
    if ctx.invoked_subcommand is not None:  # `hubfleet costs import` (cli/cost_import_cmds.py)
        return

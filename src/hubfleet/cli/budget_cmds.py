"""`hubfleet budgets`: each community's (and hub's) budget for a month, spent so far, forecast and status."""

from __future__ import annotations

import json
import re
from typing import Annotated

import typer
from rich.markup import escape
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
from hubfleet.clock import utcnow
from hubfleet.settings import UserError, resolve_fleet_dir, resolve_state_dir
from hubfleet.suggest import suggestion


def _month(value: str | None) -> str:
    if value is None:
        return utcnow().strftime("%Y-%m")
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value):
        raise UserError(f"--month {value!r}: not a month; write YYYY-MM, for example 2026-11")
    return value


@app.command()
@friendly_errors
def budgets(
    month: Annotated[
        str | None, typer.Option("--month", help="YYYY-MM (default: this month, UTC).", show_default=False)
    ] = None,
    community: Annotated[str | None, typer.Option("--community", help="Only this community.")] = None,
    as_json: JsonOption = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Each community's budget for a month (its own, or the default rule's), what it has spent, the month's
    forecast from the daily run rate, the % used and its status; hubs with budgets of their own below it.
    Costs are the month's allocation as last stored: `hubfleet up` re-allocates the running month hourly
    where a cluster has a price sheet, `hubfleet costs allocate` at any time."""
    from hubfleet.costs.budgets import budget_statuses
    from hubfleet.store import open_store

    chosen = _month(month)
    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    if community is not None and community not in config.communities:
        hint = suggestion(
            community, sorted(config.communities), "communities", "the fleet has no communities"
        )
        raise UserError(f"--community {community!r}: no such community; {hint}")
    with open_store(resolve_state_dir(fleet_dir, state_dir)) as store:
        found = budget_statuses(
            store, config, chosen, communities=[community] if community is not None else None
        )
    if as_json:
        typer.echo(json.dumps({"month": chosen, "budgets": [s.to_dict() for s in found]}, indent=2))
        return
    if not found:
        console.print("no communities")
        return
    table = Table(title=f"budgets, {chosen}", title_justify="left")
    for column in ("community", "hub", "budget", "spent", "forecast", "used", "status"):
        table.add_column(
            column, justify="right" if column in ("budget", "spent", "forecast", "used") else "left"
        )
    notes: list[str] = []
    for status in found:
        row = status.to_dict()
        cur = row["currency"]
        budget = f"{row['budget']} {cur}" if row["budget"] is not None else "-"
        if status.basis == "default":
            budget += " *"
            notes.append(f"* {status.community}: {status.basis_note}")
        elif status.basis == "none" and status.basis_note:
            notes.append(f"{status.community}: {status.basis_note}")
        for missing in status.missing_rates:
            notes.append(
                f"{status.community}: costs left out, no exchange rate {missing} "
                "(add it to fleet.yaml `costs.exchange_rates`)"
            )
        used = f"{row['used_percent']:.1f} %" if row["used_percent"] is not None else "-"
        table.add_row(
            escape(status.community) if status.hub is None else "",
            escape(status.hub or ""),
            budget,
            f"{row['spent']} {cur}",
            f"{row['forecast']} {cur}",
            used,
            _colour(status.status),
        )
    console.print(table)
    for note in dict.fromkeys(notes):
        console.print(escape(note), highlight=False)


def _colour(status: str) -> str:
    if status.startswith("ok"):
        return f"[green]{escape(status)}[/green]"
    if status.startswith("no budget"):
        return escape(status)
    return f"[red]{escape(status)}[/red]"

"""`hubfleet clusters`: each Kubernetes cluster with its versions, support dates and extended-support cost."""

from __future__ import annotations

import json
from datetime import date
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
from hubfleet.settings import resolve_fleet_dir, resolve_state_dir

SUPPORT_COLOURS = {"standard": "green", "extended": "yellow", "ended": "red", "unknown": "dim", "none": "dim"}


@app.command("clusters")
@friendly_errors
def clusters(
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    json_output: JsonOption = False,
    refresh: Annotated[
        bool,
        typer.Option("--refresh", help="Read every cluster's versions live (kubectl, helm, provider CLIs)."),
    ] = False,
    calendar_file: Annotated[
        Path | None,
        typer.Option("--calendar", help="Release calendar to use instead of the one shipped with hubfleet."),
    ] = None,
    chart_table_file: Annotated[
        Path | None,
        typer.Option("--chart-table", help="z2jh chart table to use instead of the shipped one."),
    ] = None,
    on: Annotated[
        str | None,
        typer.Option("--date", help="Report support, days left and costs as of this day (YYYY-MM-DD)."),
    ] = None,
) -> None:
    """Kubernetes clusters: versions, chart, hubs, end of standard support, extra cost of extended support.

    Versions are read live for clusters never read before (or all with --refresh) and kept in the store."""
    from hubfleet.clusters.calendar import load_calendar, load_chart_table
    from hubfleet.clusters.inventory import build_inventory, latest_versions, record_versions
    from hubfleet.clusters.versions import kubernetes_cluster_names, read_versions
    from hubfleet.settings import UserError
    from hubfleet.store import open_store

    today = _day(on)
    calendar = load_calendar(calendar_file)
    chart_table = load_chart_table(chart_table_file)
    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    read_errors: dict[str, str] = {}
    with open_store(resolve_state_dir(fleet_dir, state_dir)) as store:
        for name in kubernetes_cluster_names(config):
            if not refresh and latest_versions(store, name) is not None:
                continue
            try:
                record_versions(store, read_versions(config, name))
            except UserError as err:
                read_errors[name] = str(err)
        inventory = build_inventory(config, store, calendar=calendar, chart_table=chart_table, today=today)
    if json_output:
        typer.echo(json.dumps({**inventory.to_json(), "read_errors": read_errors}, indent=2))
    else:
        _print_table(inventory.to_json(), config.settings.name)
        for line in inventory.warnings:
            err_console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)
        for row in inventory.rows:
            for line in row.warnings:
                err_console.print(
                    f"[yellow]warning:[/] cluster {row.cluster}: {escape(line)}", highlight=False
                )
    for line in read_errors.values():
        err_console.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    if read_errors:
        raise typer.Exit(1)


def _day(text: str | None) -> date | None:
    from hubfleet.settings import UserError

    if text is None:
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise UserError(f"--date '{text}' is not a day such as 2026-11-30") from None


def _print_table(data: dict[str, Any], fleet_name: str) -> None:
    calendar, charts = data["calendar"], data["chart_table"]
    title = (
        f"fleet '{fleet_name}' on {data['today']}: calendar compiled {calendar['compiled']}, "
        f"chart table compiled {charts['compiled']}"
    )
    table = Table(title=title, title_justify="left")
    for column in (
        "cluster", "provider", "region", "control plane", "node pools", "chart", "hubs", "read",
        "support", "standard ends", "days left", "extra/month",
    ):  # fmt: skip
        table.add_column(column)
    for row in data["clusters"]:
        support = row["support"]
        pools = ", ".join(f"{pool} {version}" for pool, version in sorted(row["node_pools"].items()))
        deployed = sorted(set(row["chart_versions"].values()))
        chart = row["chart_version"] + (
            f" (runs {', '.join(deployed)})" if deployed not in ([], [row["chart_version"]]) else ""
        )
        table.add_row(
            row["cluster"],
            row["provider"],
            row["region"] or "",
            row["control_plane"] or "never read",
            escape(pools),
            chart,
            str(row["hub_count"]),
            (row["read_at"] or "")[:16].replace("T", " "),
            f"[{SUPPORT_COLOURS.get(support, 'dim')}]{support}[/]",
            row["end_of_standard"] or "",
            "" if row["days_left"] is None else str(row["days_left"]),
            "" if row["extra_monthly_cost"] is None else f"${row['extra_monthly_cost']:,.2f}",
        )
    console.print(table)

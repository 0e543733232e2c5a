"""`hubfleet costs import FILE...`: cloud billing exports (FOCUS) into the store."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from hubfleet.cli.common import (
    FleetOption,
    JsonOption,
    StateDirOption,
    console,
    friendly_errors,
    load_or_explain,
)
from hubfleet.cli.cost_cmds import costs_app
from hubfleet.settings import resolve_fleet_dir, resolve_state_dir


def _money(value: Decimal | str) -> str:
    return f"{Decimal(value):,.2f}"


@costs_app.command("import")
@friendly_errors
def import_exports(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="FOCUS 1.0/1.2 exports: CSV, gzipped CSV or Parquet, as AWS Data Exports, Azure Cost "
            "Management and GCP's FOCUS view write them.",
            show_default=False,
            metavar="FILE",
        ),
    ],
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    json_output: JsonOption = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Check every file and show what would be imported; change nothing."),
    ] = False,
) -> None:
    """Import billing exports: each billing account's month replaces its earlier import, all files in one
    transaction (any bad row: nothing changes). Rows go to the hub or cluster their tags or accounts name;
    the rest is reported as unallocated and kept. Then the month is allocated and checked against the bill."""
    from hubfleet.costs.focus_import import import_exports as run
    from hubfleet.deploy.audit import deploy_actor
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    state = resolve_state_dir(fleet_dir, state_dir)
    if dry_run:
        report = run(None, config, files, state_dir=None, dry_run=True)
        checks: dict[str, list[dict[str, Any]]] = {}
    else:
        from hubfleet.costs.allocation import allocate_month
        from hubfleet.costs.queries import month_check

        with open_store(state) as store:
            report = run(
                store,
                config,
                files,
                state_dir=state,
                actor=deploy_actor(config.root, "hubfleet costs import"),
            )
            checks = {}
            for month in report.months:
                allocate_month(store, config, month, state_dir=state)
                checks[month] = [c.as_dict() for c in month_check(store, month)]
    if json_output:
        typer.echo(json.dumps({**report.to_dict(), "checks": checks}, indent=2))
        return
    _print(report.to_dict(), checks)


def _print(report: dict[str, Any], checks: dict[str, list[dict[str, Any]]]) -> None:
    if not report["accounts"]:
        console.print("nothing to import: the files hold no rows")
        return
    verb = "would import" if report["dry_run"] else "imported"
    for item in report["accounts"]:
        cur = item["currency"]
        replaced = " (replaces the earlier import)" if item["replaced"] else ""
        console.print(
            f"[bold]{verb} {escape(item['account'])} {item['month']}[/]: {item['rows']:,} rows, billed "
            f"{_money(item['billed'])} {cur}{replaced}",
            highlight=False,
        )
        table = Table(show_header=True, title_justify="left")
        for column in ("to", "", "amount", ""):
            table.add_column(column, justify="right" if column == "amount" else "left")
        for hub, amount in item["hubs"].items():
            table.add_row("hub", escape(hub), _money(amount), cur)
        for cluster, amount in item["clusters"].items():
            table.add_row("cluster (shared)", escape(cluster), _money(amount), cur)
        left = item["unallocated"]
        table.add_row("unallocated", f"{left['rows']:,} rows", _money(left["amount"]), cur)
        console.print(table)
        if left["rows"]:
            services = ", ".join(f"{escape(s)} {_money(a)}" for s, a in left["top_services"])
            resources = ", ".join(f"{escape(r)} {_money(a)}" for r, a in left["top_resources"][:3])
            console.print(f"  unallocated by service: {services}", highlight=False)
            console.print(f"  largest unallocated resources: {resources}", highlight=False)
        for hub, amount in left["unknown_hubs"].items():
            console.print(
                f"  [yellow]tagged with hub '{escape(hub)}', which the fleet does not have[/]: "
                f"{_money(amount)} {cur} stays unallocated (a typo in the tag, or a retired hub?)",
                highlight=False,
            )
    for month, rows in checks.items():
        for check in rows:
            mark = "[green]ok[/]" if check["ok"] else "[red]does not add up[/]"
            console.print(
                f"{month} {escape(check['account'])}: billed {_money(check['billed'])} {check['currency']}, "
                f"allocated {_money(check['allocated'])}, unallocated {_money(check['unallocated'])}: {mark}",
                highlight=False,
            )

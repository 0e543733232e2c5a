"""`hubfleet costs`: what each hub, user and group cost in a month, and whether the allocation adds up to the
bill; `hubfleet costs allocate` recomputes a month (`hubfleet costs import` is in cli/cost_import_cmds.py)."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
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
from hubfleet.clock import utcnow
from hubfleet.settings import UserError, resolve_fleet_dir, resolve_state_dir

costs_app = typer.Typer(help="Costs: import billing exports; what each community, hub, user and group cost.")
app.add_typer(costs_app, name="costs")

MonthOption = Annotated[
    str | None, typer.Option("--month", help="The month, YYYY-MM (default: this month, UTC).")
]
REFRESH_SECONDS = 3600
"""A price-sheet month still running is allocated again when its allocation is older than this."""


def _month(value: str | None) -> str:
    from hubfleet.costs.allocation import month_bounds

    month = value or utcnow().strftime("%Y-%m")
    month_bounds(month)
    return month


def _money(value: str | Decimal) -> str:
    return f"{Decimal(value):,.2f}"


def _refresh(store: Any, config: Any, month: str) -> None:
    """Allocate the month first when nothing is allocated yet, an import is newer than the allocation, or
    (price sheets, this month) usage has moved on since the last allocation."""
    from hubfleet.costs.allocation import allocate_month
    from hubfleet.costs.queries import month_state

    state = month_state(store, month)
    sheets = any(c.costs.price_sheet for c in config.clusters.values())
    current = month == utcnow().strftime("%Y-%m")
    old = state.allocated_at is None or (utcnow() - state.allocated_at).total_seconds() > REFRESH_SECONDS
    if state.stale or (state.allocated == 0 and (state.imports or sheets)) or (sheets and current and old):
        allocate_month(store, config, month)


def _print_report(report: dict[str, Any], scope: str) -> None:
    table = Table(title=f"costs of {scope}, {report['month']}", title_justify="left")
    for column in ("community", "hub", "direct", "shared", "idle", "total", ""):
        table.add_column(column, justify="left" if column in ("community", "hub", "") else "right")
    for row in report["hubs"]:
        table.add_row(
            escape(row["community"] or "-"),
            escape(row["hub"]),
            *(_money(row[k]) for k in ("direct", "shared", "idle", "total")),
            row["currency"],
        )
    for row in report["account_lines"]:
        what = "unallocated" if row["line"] == "unallocated" else "idle (kept by the operator)"
        where = f" ({row['cluster']})" if row["cluster"] else ""
        table.add_row(
            f"[dim]account {escape(row['account'])}[/]",
            escape(what + where),
            "",
            "",
            "",
            _money(row["amount"]),
            row["currency"],
        )
    for row in report["communities"]:
        name = f"[bold]{escape(row['community'] or '(no community)')}[/]"
        table.add_row(name, "(all hubs)", "", "", "", _money(row["total"]), row["currency"])
    for row in report["totals"]:
        table.add_row("[bold]total[/]", "", "", "", "", f"[bold]{_money(row['total'])}[/]", row["currency"])
    console.print(table)
    for key, label in (("users", "user"), ("groups", "group")):
        if key not in report:
            continue
        members = Table(title=f"per {label}", title_justify="left")
        for column in ("hub", label, "amount", ""):
            members.add_column(column, justify="right" if column == "amount" else "left")
        for row in report[key]:
            name = row[label] or "(the hub's own: no user's use behind it)"
            members.add_row(escape(row["hub"]), escape(name), _money(row["amount"]), row["currency"])
        console.print(members)
    if "days" in report:
        days = Table(title="per day", title_justify="left")
        for column in ("day", "hub", "amount", ""):
            days.add_column(column, justify="right" if column == "amount" else "left")
        for row in report["days"]:
            days.add_row(row["day"], escape(row["hub"]), _money(row["amount"]), row["currency"])
        console.print(days)
    for account in report["accounts"]:
        sign = "=" if account["ok"] else "≠"
        line = (
            f"{escape(account['account'])}: billed {_money(account['billed'])} {account['currency']} {sign} "
            f"allocated {_money(account['allocated'])} {account['currency']}"
        )
        if Decimal(account["unallocated"]):
            line += f" (unallocated {_money(account['unallocated'])})"
        console.print(("[green]✓[/] " if account["ok"] else "[red]✗[/] ") + line, highlight=False)
        for problem in account["problems"]:
            console.print(f"    {escape(problem)}", highlight=False)


def _csv(report: dict[str, Any], by: str | None, daily: bool) -> str:
    if daily:
        rows, columns = report["days"], ["day", "hub", "currency", "amount"]
    elif by:
        rows, columns = report[f"{by}s"], ["hub", by, "currency", "amount"]
    else:
        rows = report["hubs"]
        columns = ["community", "hub", "cluster", "currency", "direct", "shared", "idle", "total"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


@costs_app.callback(invoke_without_command=True)
@friendly_errors
def costs(
    ctx: typer.Context,
    month: MonthOption = None,
    community: Annotated[str | None, typer.Option("--community", help="Only this community's hubs.")] = None,
    hub: Annotated[str | None, typer.Option("--hub", help="Only this hub.")] = None,
    by: Annotated[
        str | None, typer.Option("--by", help="Also each hub's `user`s or `group`s.", metavar="user|group")
    ] = None,
    daily: Annotated[bool, typer.Option("--daily", help="Also each hub's cost per day.")] = False,
    json_output: JsonOption = False,
    csv_output: Annotated[
        bool,
        typer.Option(
            "--csv", help="Print CSV: the hubs, or with --by the users/groups, with --daily the days."
        ),
    ] = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """A month's costs per community and hub (direct, shared, idle), the account's unallocated line, totals
    per currency, and per billing account whether the allocation adds up to the bill to the cent."""
    if ctx.invoked_subcommand is not None:  # `hubfleet costs import|allocate`
        return
    from hubfleet.costs.queries import month_report
    from hubfleet.store import open_store

    if json_output and csv_output:
        raise UserError("choose one of --json and --csv")
    if by not in (None, "user", "group"):
        raise UserError(f"--by {by!r}: choose `user` or `group`")
    chosen = _month(month)
    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    hubs: list[str] | None = None
    if community is not None:
        if community not in config.communities:
            known = ", ".join(sorted(config.communities)) or "none"
            raise UserError(
                f"no community named '{community}' in fleet '{config.settings.name}'; communities: {known}"
            )
        hubs = sorted(n for n, h in config.hubs.items() if h.community == community)
    if hub is not None:
        config.require_hub(hub)
        if hubs is not None and hub not in hubs:
            raise UserError(f"hub '{hub}' is not a hub of community '{community}'")
        hubs = [hub]
    with open_store(resolve_state_dir(fleet_dir, state_dir)) as store:
        _refresh(store, config, chosen)
        report = month_report(store, config, chosen, hubs=hubs, by=by, daily=daily)
    if not report["accounts"]:
        raise UserError(
            f"nothing to show for {chosen}: no billing export is imported for it and no cluster has a price "
            "sheet; run `hubfleet costs import FILE...` (or give a cluster `costs.price_sheet`)"
        )
    if json_output:
        typer.echo(json.dumps(report, indent=2))
    elif csv_output:
        typer.echo(_csv(report, by, daily), nl=False)
    else:
        scope = (
            f"hub {hub}"
            if hub
            else f"community {community}"
            if community
            else f"fleet {config.settings.name}"
        )
        _print_report(report, scope)
    if not report["ok"]:
        raise typer.Exit(2)


@costs_app.command("allocate")
@friendly_errors
def allocate(
    month: MonthOption = None,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Allocate a month again (after a change of tags, price sheet, capacity or idle setting): every
    imported billing account and price-sheet cluster, replacing the month's earlier allocation."""
    from hubfleet.costs.allocation import allocate_month
    from hubfleet.costs.queries import month_check
    from hubfleet.store import open_store

    chosen = _month(month)
    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    with open_store(resolve_state_dir(fleet_dir, state_dir)) as store:
        result = allocate_month(store, config, chosen)
        checks = month_check(store, chosen)
    if not checks:
        raise UserError(
            f"nothing to allocate for {chosen}: no billing export is imported for it and no cluster has a "
            "price sheet; run `hubfleet costs import FILE...` first"
        )
    if json_output:
        payload = {
            "month": chosen,
            "usage_until": result.usage_until.isoformat(),
            "sessions": result.sessions,
            "fallback_sessions": result.fallback_sessions,
            "accounts": [check.as_dict() for check in checks],
            "ok": all(check.ok for check in checks),
        }
        typer.echo(json.dumps(payload, indent=2))
    else:
        if result.fallback_sessions:
            console.print(
                f"{result.fallback_sessions} of {result.sessions} server sessions had no recorded request: "
                "counted with their environment's or hub's configured resources (else 1 core, 1 GiB)",
                highlight=False,
            )
        for check in checks:
            sign = "=" if check.ok else "≠"
            console.print(
                f"{escape(check.account)}: billed {_money(check.billed)} {check.currency} {sign} allocated "
                f"{_money(check.allocated)} {check.currency}",
                highlight=False,
            )
            for problem in check.problems:
                err_console.print(f"    {escape(problem)}", highlight=False)
    if not all(check.ok for check in checks):
        raise typer.Exit(2)

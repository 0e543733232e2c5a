"""`hubfleet usage`: daily, weekly and monthly active users, server-hours and peak servers."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta
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
    friendly_errors,
    load_or_explain,
)
from hubfleet.clock import utcnow
from hubfleet.settings import UserError, resolve_fleet_dir, resolve_state_dir

DEFAULT_DAYS = 7
DAY_COLUMNS = ("day", "dau", "wau", "mau", "server_hours", "peak_servers")


def _day(value: str | None, flag: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UserError(f"{flag} {value!r}: not a date; use YYYY-MM-DD, e.g. 2025-06-30") from None


def _csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=DAY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(report["days"])
    return out.getvalue()


def _print_tables(report: dict[str, Any], title: str) -> None:
    days = Table(title=title, title_justify="left")
    for column in ("day", "DAU", "WAU", "MAU", "server-hours", "peak servers"):
        days.add_column(column, justify="left" if column == "day" else "right")
    for row in report["days"]:
        days.add_row(
            row["day"],
            str(row["dau"]),
            str(row["wau"]),
            str(row["mau"]),
            f"{row['server_hours']:.1f}",
            str(row["peak_servers"]),
        )
    console.print(days)
    hubs = Table(title=f"per hub on {report['window']['to']}", title_justify="left")
    columns = ("hub", "DAU", "WAU", "MAU", "server-hours", "peak", "hub says 24h/7d/30d")
    for column in columns:
        hubs.add_column(column, justify="left" if column == "hub" else "right")

    def gauge(value: Any) -> str:
        return "-" if value is None else str(value)

    for name, row in report["hubs"].items():
        says = "/".join(gauge(row[f"hub_reported_active_{p}"]) for p in ("24h", "7d", "30d"))
        hubs.add_row(
            name,
            str(row["dau"]),
            str(row["wau"]),
            str(row["mau"]),
            f"{row['server_hours']:.1f}",
            str(row["peak_servers"]),
            says,
        )
    fleet = report["fleet"]
    hubs.add_row(
        "[bold]fleet (distinct people)[/]",
        str(fleet["dau"]),
        str(fleet["wau"]),
        str(fleet["mau"]),
        f"{fleet['server_hours']:.1f}",
        str(fleet["peak_servers"]),
        "",
    )
    console.print(hubs)


@app.command()
@friendly_errors
def usage(
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    hub: Annotated[str | None, typer.Option("--hub", help="Only this hub.")] = None,
    community: Annotated[str | None, typer.Option("--community", help="Only this community's hubs.")] = None,
    from_: Annotated[
        str | None,
        typer.Option("--from", help=f"First day (YYYY-MM-DD; default: {DEFAULT_DAYS - 1} days before --to)."),
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Last day (YYYY-MM-DD; default: today, UTC).")
    ] = None,
    json_output: JsonOption = False,
    csv_output: Annotated[bool, typer.Option("--csv", help="Print the per-day rows as CSV.")] = False,
    month: Annotated[
        str | None,
        typer.Option(
            "--month",
            help="The calendar month whose people are counted (YYYY-MM; default: the month of --to), as "
            "invoices count them: accounts of one person merged, usernames used by several split.",
        ),
    ] = None,
) -> None:
    """Daily, weekly and monthly active users (distinct people; staff and the check user left out),
    server-hours and peak concurrent servers per day, per hub and fleet-wide, and a month's people."""
    from hubfleet.monitor.usage import month_days, people_in_month, usage_report, user_database_sizes
    from hubfleet.store import open_store

    if json_output and csv_output:
        raise UserError("choose one of --json and --csv")
    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    names = sorted(config.hubs)
    if hub is not None:
        config.require_hub(hub)
        names = [hub]
    if community is not None:
        if community not in config.communities:
            known = ", ".join(sorted(config.communities))
            raise UserError(
                f"no community named '{community}' in fleet '{config.settings.name}'; communities: {known}"
            )
        names = [n for n in names if config.hubs[n].community == community]
    now = utcnow()
    last = _day(to, "--to") or now.date()
    first = _day(from_, "--from") or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise UserError(f"--from {first} is after --to {last}")
    month = month or f"{last:%Y-%m}"
    try:
        month_days(month)
    except ValueError as exc:
        raise UserError(f"--month: {exc}") from None
    state = resolve_state_dir(fleet_dir, state_dir)
    with open_store(state) as store:
        report = usage_report(store, names, first, last, now=now)
        people = people_in_month(store, month, names)
    report["people"] = people.as_json()
    local = [config.hubs[n] for n in names if config.cluster_of(config.hubs[n]).kind == "local"]
    databases = user_database_sizes(state, local)
    if databases:
        report["user_databases"] = databases
    if json_output:
        typer.echo(json.dumps(report, indent=2))
    elif csv_output:
        typer.echo(_csv(report), nl=False)
    else:
        scope = (
            f"hub {hub}"
            if hub
            else f"community {community}"
            if community
            else f"fleet {config.settings.name}"
        )
        _print_tables(report, f"usage of {scope}, {first} to {last} (UTC days)")
        _print_people(report["people"])
        _print_databases(databases)


def _print_people(people: dict[str, Any]) -> None:
    """The month's people and why accounts were merged or split."""
    console.print(
        f"people active in {people['month']}: [bold]{people['people']}[/] "
        f"({people['accounts']} account{'' if people['accounts'] == 1 else 's'})"
    )
    for merge in people["merged"]:
        count = len(merge["accounts"])
        console.print(f"  {count} accounts are 1 person: {escape(merge['why'])}")
    for split in people["shared"]:
        console.print(f"  {escape(split['why'])}: counted as {len(split['identities'])} people")


def _print_databases(databases: dict[str, dict[str, int]]) -> None:
    """Each user's database size (bytes of its data directory, measured now)."""
    from hubfleet.units import human_bytes

    for name, sizes in databases.items():
        table = Table(title=f"user databases of {name} (on disk now)", title_justify="left")
        table.add_column("user")
        table.add_column("size", justify="right")
        for user, size in sorted(sizes.items(), key=lambda item: -item[1]):
            table.add_row(escape(user), human_bytes(size))
        if not sizes:
            table.add_row("(none yet)", "")
        console.print(table)


@app.command()
@friendly_errors
def disk(
    hub: Annotated[str | None, typer.Argument(help="Only this hub (default: every local hub).")] = None,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Disk use of each local hub and its users (largest first) from the daemon's newest measurement
    (every monitoring.disk_interval), with each user's share of the hub's home_quota."""
    from hubfleet.monitor.disk_usage import disk_summary, homes_locator
    from hubfleet.store import open_store
    from hubfleet.units import human_bytes

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    if hub is not None:
        config.require_hub(hub)
        if config.clusters[config.hubs[hub].cluster].kind != "local":
            raise UserError(
                f"hub '{hub}' runs on kubernetes: its homes are the cloud's volumes, not measured"
            )
        hubs = [config.hubs[hub]]
    else:
        hubs = [h for _, h in sorted(config.hubs.items()) if config.clusters[h.cluster].kind == "local"]
    state = resolve_state_dir(fleet_dir, state_dir)
    with open_store(state) as store:
        summary = disk_summary(store, hubs, homes_locator(state))
    if json_output:
        typer.echo(json.dumps(summary, indent=2))
        return
    for name, row in summary.items():
        quota = row["quota"]
        if row["at"] is None:
            console.print(f"[bold]{name}[/]: not measured yet (the daemon measures every disk_interval)")
            continue
        at = datetime.fromisoformat(row["at"])
        total = human_bytes(row["total_bytes"] or 0)
        head = f"[bold]{escape(name)}[/]: {total} in total, {at:%Y-%m-%d %H:%M} UTC"
        if quota:
            head += f"; home_quota {quota['limit']}, warnings at {', '.join(map(str, quota['warn_at']))}%"
        console.print(head)
        table = Table()
        table.add_column("user")
        table.add_column("size", justify="right")
        if quota:
            table.add_column("of quota", justify="right")
        for user in row["users"]:
            cells = [user["username"], human_bytes(user["bytes"])]
            if quota:
                mark = f" (past {user['warning']}%)" if user["warning"] else ""
                cells.append(f"{user['quota_percent']:.1f}%{mark}")
            table.add_row(*map(escape, cells))
        console.print(table)
        if quota and row["enforcement"]:
            console.print(f"  {row['enforcement']}")

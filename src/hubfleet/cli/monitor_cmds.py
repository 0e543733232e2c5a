"""`hubfleet probe` (one uptime pass), `hubfleet incidents` and `hubfleet uptime`."""

from __future__ import annotations

import asyncio
import json
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
from hubfleet.settings import resolve_fleet_dir, resolve_state_dir


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}%"


@app.command()
@friendly_errors
def probe(
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Probe every hub once (/hub/health and /hub/api/), record the samples and open/resolve incidents.

    Exits 1 when a hub fails its probe."""
    from hubfleet.monitor.prober import Prober
    from hubfleet.monitor.uptime import ProbeResult
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    state = resolve_state_dir(fleet_dir, state_dir)

    async def one_pass(prober: Prober) -> list[ProbeResult]:
        try:
            return await prober.probe_once()
        finally:
            await prober.aclose()

    with open_store(state) as store:
        prober = Prober(config, state, store)
        results = asyncio.run(one_pass(prober))
        changes = prober.tracker.last_changes
    if as_json:
        data = {
            "hubs": [r.to_dict() for r in results],
            "opened": [i.to_dict() for event, i in changes if event == "opened"],
            "resolved": [i.to_dict() for event, i in changes if event == "resolved"],
        }
        typer.echo(json.dumps(data, indent=2))
    elif not results:
        console.print(f"fleet '{config.settings.name}' has no hubs to probe")
    else:
        table = Table(title=f"probe of fleet '{config.settings.name}'", title_justify="left")
        for column in ("hub", "", "latency", "health", "api", "url", "detail"):
            table.add_column(column)
        for r in results:
            detail = r.error
            if r.cert_expires_at:
                detail = (detail + "; " if detail else "") + f"certificate until {r.cert_expires_at:%Y-%m-%d}"
            table.add_row(
                r.hub,
                "[green]ok[/green]" if r.ok else "[red]FAILING[/red]",
                "—" if r.latency_ms is None else f"{r.latency_ms:.0f} ms",
                str(r.health_status or "—"),
                str(r.api_status or "—"),
                r.url,
                escape(detail),
            )
        console.print(table)
        for event, incident in changes:
            console.print(f"incident {event}: {incident.kind} of {incident.hub}: {escape(incident.cause)}")
    if any(not r.ok for r in results):
        raise typer.Exit(1)


@app.command()
@friendly_errors
def incidents(
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    hub: Annotated[str | None, typer.Option("--hub", help="Only this hub.")] = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only incidents still open.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Hub outages, certificate warnings, anomalies, quota warnings, failed or late backups and cost alerts
    (budgets: a community's), newest first, with duration and cause."""
    from hubfleet.monitor.incidents import list_incidents
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    if hub is not None:
        load_or_explain(fleet_dir).require_hub(hub)
    with open_store(resolve_state_dir(fleet_dir, state_dir)) as store:
        found = list_incidents(store, hub=hub, open_only=open_only, limit=limit)
    now = utcnow()
    if as_json:
        typer.echo(json.dumps([i.to_dict(now) for i in found], indent=2))
        return
    if not found:
        console.print("no open incidents" if open_only else "no incidents recorded")
        return
    table = Table(title="open incidents" if open_only else "incidents", title_justify="left")
    for column in ("started (UTC)", "hub", "kind", "state", "duration", "cause"):
        table.add_column(column)
    for i in found:
        table.add_row(
            i.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            i.hub or f"(community {i.community})",  # a community's budget incident has no hub
            i.kind + (f" ({i.rule})" if i.rule else ""),
            "[red]open[/red]" if i.open else "resolved",
            _duration(i.duration_seconds(now)),
            escape(i.cause),
        )
    console.print(table)


@app.command()
@friendly_errors
def uptime(
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Each hub's uptime over 24 h, 7 d and 30 d: the share of successful probes, with and without the
    probes that failed during planned maintenance (deploys)."""
    from hubfleet.monitor.uptime import uptime_by_hub
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    with open_store(resolve_state_dir(fleet_dir, state_dir)) as store:
        figures = uptime_by_hub(store, sorted(config.hubs))
        unplanned = uptime_by_hub(store, sorted(config.hubs), excluding_planned=True)
    if as_json:
        typer.echo(json.dumps({"uptime": figures, "excluding_planned_maintenance": unplanned}, indent=2))
        return
    table = Table(title=f"uptime of fleet '{config.settings.name}'", title_justify="left")
    for column in ("hub", "24 h", "7 d", "30 d", "24 h*", "7 d*", "30 d*"):
        table.add_column(column)
    windows = ("24h", "7d", "30d")
    for name in figures:
        table.add_row(
            name,
            *(_percent(figures[name][w]) for w in windows),
            *(_percent(unplanned[name][w]) for w in windows),
        )
    console.print(table)
    console.print("*: planned maintenance (deploys) not counted as downtime")
    if all(v is None for windows in figures.values() for v in windows.values()):
        console.print("no probe samples yet: run `hubfleet up` (it probes every hub) or `hubfleet probe`")

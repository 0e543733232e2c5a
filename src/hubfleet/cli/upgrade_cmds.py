"""`hubfleet upgrade-plan` (what an upgrade of a cluster would do) and `hubfleet upgrade` (do it, step by
step, resumable)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

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

ToOption = Annotated[
    str | None,
    typer.Option(
        "--to", help="Target Kubernetes minor version, e.g. 1.33 (default: the newest in standard support)."
    ),
]
CalendarOption = Annotated[
    Path | None, typer.Option("--calendar", help="Release calendar instead of the one shipped with hubfleet.")
]
ChartTableOption = Annotated[
    Path | None, typer.Option("--chart-table", help="z2jh chart table instead of the shipped one.")
]
RemovedOption = Annotated[
    Path | None, typer.Option("--removed-apis", help="Removed-API table instead of the shipped one.")
]
ChartsOption = Annotated[
    Path | None,
    typer.Option(
        "--charts", help="Directory of chart archives (jupyterhub-VERSION.tgz) to render hubs with."
    ),
]
WindowOption = Annotated[
    str,
    typer.Option("--window", help="Maintenance window for the notices, e.g. '2026-12-05 08:00-12:00 UTC'."),
]


@app.command("upgrade-plan")
@friendly_errors
def upgrade_plan(
    cluster: Annotated[
        str | None, typer.Argument(help="Cluster to plan (default: every kubernetes cluster).")
    ] = None,
    to: ToOption = None,
    fleet: FleetOption = None,
    as_json: JsonOption = False,
    calendar_file: CalendarOption = None,
    chart_table_file: ChartTableOption = None,
    removed_file: RemovedOption = None,
    charts_dir: ChartsOption = None,
    window: WindowOption = "",
) -> None:
    """The steps to bring a cluster to a Kubernetes version within the version-skew policy, their commands,
    the chart that supports it, hubs using removed APIs, and a maintenance notice per community."""
    from hubfleet.clock import utcnow
    from hubfleet.clusters.upgrade_plan import plan_for_cluster
    from hubfleet.clusters.versions import kubernetes_cluster_names
    from hubfleet.settings import UserError

    config = load_or_explain(resolve_fleet_dir(fleet))
    names = [cluster] if cluster else kubernetes_cluster_names(config)
    plans, errors = [], {}
    for name in names:
        try:
            plans.append(
                plan_for_cluster(
                    config,
                    name,
                    to,
                    today=utcnow().date(),
                    calendar_file=calendar_file,
                    chart_table_file=chart_table_file,
                    removed_file=removed_file,
                    charts_dir=charts_dir,
                    window=window,
                )
            )
        except UserError as exc:
            if cluster:  # the one cluster asked for: its error is the answer
                raise
            errors[name] = str(exc)  # every cluster: the others are still planned
    if as_json:
        typer.echo(json.dumps({"plans": [p.to_json() for p in plans], "errors": errors}, indent=2))
    else:
        for plan in plans:
            _print_plan(plan.to_json())
    for message in errors.values():
        err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    if errors:
        raise typer.Exit(1)


def _print_plan(plan: dict[str, Any]) -> None:
    pools = ", ".join(f"{k} {v}" for k, v in plan["current"]["node_pools"].items()) or "none"
    console.print(
        f"[bold]{escape(plan['cluster'])}[/bold] ({plan['provider']}): control plane "
        f"{plan['current']['control_plane']}, node pools {escape(pools)} -> {plan['target']}",
        highlight=False,
    )
    for step in plan["steps"]:
        console.print(f"  {step['number']}. {escape(step['description'])}", highlight=False)
        for argv in step["commands"]:
            console.print("       $ " + escape(" ".join(argv)), highlight=False, soft_wrap=True)
    chart = plan["chart"]
    if chart["supports_target"]:
        console.print(f"  chart {chart['current']} supports Kubernetes {plan['target']}", highlight=False)
    else:
        known = "does not support" if chart["supports_target"] is False else "is not in the chart table for"
        advice = f"; use chart {chart['recommended']}" if chart["recommended"] else ""
        console.print(
            f"  [yellow]chart {chart['current']} {known} Kubernetes {plan['target']}{advice}[/yellow]",
            highlight=False,
        )
    for scan in plan["scans"]:
        if not scan["scanned"]:
            console.print(f"  hub {scan['hub']}: [yellow]{escape(scan['note'])}[/yellow]", highlight=False)
        elif not scan["findings"]:
            console.print(
                f"  hub {scan['hub']}: {scan['objects']} objects, no API removed up to {plan['target']}",
                highlight=False,
            )
        for f in scan["findings"]:
            console.print(
                f"  [red]hub {scan['hub']}: {f['kind']} {escape(f['name'])} uses {f['api_version']}, "
                f"removed in {f['removed_in']}; use {escape(f['replacement'])}[/red]",
                highlight=False,
            )
    for notice in plan["notices"]:
        to = ", ".join(notice["contacts"]) or "(no contacts)"
        console.print(f"\n  notice for {notice['community']} (to: {escape(to)}):", highlight=False)
        for line in notice["text"].splitlines():
            console.print("    " + escape(line), highlight=False, soft_wrap=True)
    for line in plan["warnings"]:
        err_console.print(f"[yellow]warning:[/yellow] {escape(line)}", highlight=False)
    console.print("")


@app.command("upgrade")
@friendly_errors
def upgrade(
    cluster: Annotated[str, typer.Argument(help="Cluster to upgrade.")],
    to: ToOption = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run that stopped at a failure.")
    ] = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    as_json: JsonOption = False,
    calendar_file: CalendarOption = None,
    chart_table_file: ChartTableOption = None,
    removed_file: RemovedOption = None,
    charts_dir: ChartsOption = None,
    ignore_blockers: Annotated[
        bool,
        typer.Option("--ignore-blockers", help="Run although hubs use removed APIs or the chart refuses it."),
    ] = False,
) -> None:
    """Run the upgrade plan of CLUSTER step by step: provider commands, then a check of every hub; stops at
    the first failure, records every step (`hubfleet history CLUSTER`) and continues with --resume."""
    import asyncio

    from hubfleet.clock import utcnow
    from hubfleet.clusters.upgrade import (
        UpgradeFailed,
        UpgradeOptions,
        cluster_lock,
        execute,
        run_json,
        start_or_resume,
    )
    from hubfleet.deploy.audit import deploy_actor
    from hubfleet.store import open_store

    if to is None and not resume:
        raise typer.BadParameter("give the target version with --to (e.g. --to 1.33)", param_hint="--to")
    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    options = UpgradeOptions(
        today=utcnow().date(),
        actor=deploy_actor(fleet_dir, "hubfleet upgrade"),
        calendar_file=calendar_file,
        chart_table_file=chart_table_file,
        removed_file=removed_file,
        charts_dir=charts_dir,
        allow_blocked=ignore_blockers,
    )

    def report(line: str) -> None:
        if not as_json:
            console.print(escape(line), highlight=False, soft_wrap=True)

    async def go(store: Any) -> tuple[Any, str | None]:
        run = await start_or_resume(config, store, cluster, to, options, resume=resume, report=report)
        if run is None:
            return None, None
        try:
            return await execute(config, store, run, report=report, actor=options.actor), None
        except UpgradeFailed as exc:
            from hubfleet.store.upgrades import get_run

            return get_run(store, run.id), str(exc)

    state = resolve_state_dir(fleet_dir, state_dir)
    with cluster_lock(state, cluster), open_store(state) as store:
        run, failure = asyncio.run(go(store))
        data = run_json(store, config, run) if run is not None else None
    if as_json:
        typer.echo(json.dumps({"run": data, "error": failure}, indent=2))
    if failure:
        err_console.print(f"[red]error:[/red] {escape(failure)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)

"""`hubfleet plan` and `hubfleet deploy`: what would change, and applying it safely."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
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
from hubfleet.settings import UserError, resolve_fleet_dir, resolve_state_dir

ChangedFilesOption = Annotated[
    Path | None,
    typer.Option(
        "--changed-files", help="File listing changed paths (one per line): plan only hubs built from them."
    ),
]
SinceOption = Annotated[
    str | None, typer.Option("--since", help="Git ref: plan only hubs built from files changed since it.")
]
HubOption = Annotated[list[str] | None, typer.Option("--hub", help="Only this hub (repeatable).")]
COLOURS = {"create": "green", "update": "yellow", "remove": "red", "unchanged": "dim", "retired": "magenta"}


def _plan(
    fleet_dir: Path,
    state_dir: Path | None,
    changed_files: Path | None,
    since: str | None,
    hubs: list[str] | None,
):  # noqa: ANN202 - (config, state, plan)
    from hubfleet.config.cache import FleetCache
    from hubfleet.deploy.plan import files_changed_since, make_plan, read_changed_files
    from hubfleet.store import open_store

    if changed_files and since:
        raise UserError("give either --changed-files or --since, not both")
    state = resolve_state_dir(fleet_dir, state_dir)
    cache = FleetCache.in_state(state)  # the plan cache (docs/operator-guide.md)
    config = load_or_explain(fleet_dir, cache)
    for name in hubs or []:
        config.require_hub(name)
    changed = None
    if changed_files:
        changed = read_changed_files(fleet_dir, changed_files)
    elif since:
        changed = files_changed_since(fleet_dir, since)
    with open_store(state) as store:
        plan = make_plan(
            config, state, store, changed_files=changed, hubs=set(hubs) if hubs else None, cache=cache
        )
    return config, state, plan


@app.command()
@friendly_errors
def plan(
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    json_output: JsonOption = False,
    changed_files: ChangedFilesOption = None,
    since: SinceOption = None,
    hub: HubOption = None,
    output_format: Annotated[
        str, typer.Option("--format", help="text, json or github-matrix (lines for $GITHUB_OUTPUT).")
    ] = "text",
    diff: Annotated[bool, typer.Option("--diff/--no-diff", help="Show the rendered config diff.")] = True,
) -> None:
    """Show which hubs a deploy would create, update or remove, why, and the diff (secrets never shown)."""
    if output_format not in ("text", "json", "github-matrix"):
        raise UserError(f"--format must be text, json or github-matrix, not {output_format!r}")
    config, _state, result = _plan(resolve_fleet_dir(fleet), state_dir, changed_files, since, hub)
    if json_output or output_format == "json":
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    if output_format == "github-matrix":
        typer.echo(result.github_matrix())
        return
    for entry in result.hubs:
        colour = COLOURS[entry.action]
        console.print(
            f"[{colour}]{entry.action:<9}[/] {entry.name} ({entry.community}, {entry.stage})", highlight=False
        )
        for reason in entry.reasons:
            console.print(f"            {escape(reason)}", highlight=False)
        if entry.cluster_gate and entry.action not in ("unchanged", "retired", "remove"):
            console.print(
                f"            gated by {entry.cluster_gate}, the staging hub of cluster {entry.cluster}: "
                "deployed (when changed) and checked first",
                highlight=False,
            )
        if diff and entry.diff and entry.action != "create":
            console.print(escape(entry.diff), highlight=False, markup=True, style="dim")
    if result.front_door is not None:
        for line in result.front_door.lines():
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    for window in result.ready:  # scheduled ready mode (hubfleet events apply / the daemon applies it)
        console.print(window.line(), highlight=False, markup=False, soft_wrap=True)
    waves = result.waves()
    console.print(
        f"{len(result.changes)} to change of {len(result.hubs)} hub(s) in fleet '{config.settings.name}'; "
        f"staging wave: {len(waves[0])}, prod wave: {len(waves[1])}",
        highlight=False,
    )


@app.command()
@friendly_errors
def deploy(
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    hub: HubOption = None,
    parallel: Annotated[int, typer.Option("--parallel", help="Hubs deployed at once within a wave.")] = 4,
    purge: Annotated[bool, typer.Option("--purge", help="Delete the data of removed hubs.")] = False,
    json_output: JsonOption = False,
    changed_files: ChangedFilesOption = None,
    since: SinceOption = None,
) -> None:
    """Apply the plan: staging hubs first, then each prod hub whose staging hub passed its check;
    a hub whose deploy or check fails is rolled back to its last good configuration."""
    from hubfleet.backends import backends_for
    from hubfleet.deploy.audit import deploy_actor, fleet_commit
    from hubfleet.deploy.rollout import Deployer, HubOutcome, Rollout
    from hubfleet.runtime.status_file import read_status
    from hubfleet.store import open_store

    config, state, result = _plan(resolve_fleet_dir(fleet), state_dir, changed_files, since, hub)
    for entry in result.retired:  # never started again: the operator removes its file
        if hub and entry.name in hub:
            raise UserError(f"hub {entry.name} is {entry.reasons[0]}")
        err_console.print(f"{entry.name}: not deployed: {entry.reasons[0]}", highlight=False, markup=False)
    if not result.changes:
        if json_output:
            typer.echo(json.dumps(Rollout({}).to_json(), indent=2))
        else:
            console.print("nothing to deploy: every hub runs its desired configuration")
        return

    if any(h.kind == "local" for h in result.changes) and read_status(state) is None:
        raise UserError(
            f"the fleet is not up (no daemon for {state}): local hubs are deployed to the running daemon; "
            "start it with `hubfleet up --detach` (which deploys every hub)"
        )
    outcomes: dict[str, HubOutcome] = {}

    def table() -> Table:
        view = Table(title=f"deploying {len(result.changes)} hub(s)", title_justify="left")
        for column in ("hub", "stage", "action", "status", "seconds", "message"):
            view.add_column(column)
        for outcome in outcomes.values():
            view.add_row(
                outcome.name,
                outcome.stage,
                outcome.action,
                outcome.status,
                f"{outcome.seconds:.1f}" if outcome.result else "",
                escape(outcome.message),
            )
        return view

    with open_store(state) as store:
        live = (
            Live(table(), console=console, transient=False, auto_refresh=False) if not json_output else None
        )

        def changed(outcome: HubOutcome) -> None:
            outcomes[outcome.name] = outcome
            if live:
                live.update(table(), refresh=True)

        deployer = Deployer(
            config,
            store,
            backends_for(config, state),
            parallel=parallel,
            purge=purge,
            on_change=changed,
            actor=deploy_actor(config.root),
            commit=fleet_commit(config.root),
        )
        if live:
            with live:
                rollout = asyncio.run(deployer.run(result))
            console.print()
        else:
            rollout = asyncio.run(deployer.run(result))

    if json_output:
        typer.echo(json.dumps(rollout.to_json(), indent=2))
    else:
        for outcome in rollout.outcomes.values():
            if outcome.result in ("rolled_back", "failed") and outcome.log_tail:
                err_console.print(f"[red]{outcome.name}[/]: {escape(outcome.message)}", highlight=False)
                for line in outcome.log_tail:
                    err_console.print(f"    {escape(line)}", highlight=False)
        summary = ", ".join(
            f"{name.replace('_', ' ')}: {', '.join(rollout.by_result(name)) or '-'}"  # type: ignore[arg-type]
            for name in ("deployed", "rolled_back", "skipped", "failed", "removed")
        )
        console.print(summary, highlight=False)
    if not rollout.ok:
        raise typer.Exit(1)

"""`hubfleet check` (the synthetic user check of one hub) and `hubfleet history` (what happened)."""

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
    err_console,
    friendly_errors,
    load_or_explain,
)
from hubfleet.settings import resolve_fleet_dir, resolve_state_dir


@app.command()
@friendly_errors
def check(
    hub: Annotated[str, typer.Argument(help="Name of the hub to check.")],
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    as_json: JsonOption = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Give up after this many seconds.")] = 120.0,
    environment: Annotated[
        str | None,
        typer.Option("--environment", help="Check only this environment (slug); default: each of the hub's."),
    ] = None,
) -> None:
    """Do what a user does on HUB (create user, start server, run code, stop) and time each step; on a hub
    with environments, once in each (the check user's server starts it, the code runs in its default kernel).
    """
    from hubfleet.backends.local import check_endpoint, environment_problems
    from hubfleet.checks.synthetic import check_environments, checkable
    from hubfleet.render.local import dummy_password
    from hubfleet.secrets.store import SecretResolver
    from hubfleet.settings import UserError
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    hub_config = config.require_hub(hub)
    local = config.clusters[hub_config.cluster].kind == "local"
    try:
        slugs, skipped = checkable(hub_config, environment)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if local and (problems := environment_problems(hub_config)):
        raise UserError(f"{problems}; fix this machine (or the hub file), then check again")
    password = dummy_password(hub_config, SecretResolver(config))
    state = resolve_state_dir(fleet_dir, state_dir)
    endpoint = check_endpoint(config, state, hub)  # through the front door while it serves the hub
    url, token = endpoint.url, endpoint.token
    if environment is not None and not slugs:
        raise UserError(f"environment {environment} of hub {hub} cannot be checked: {skipped[environment]}")
    with open_store(state) as store:
        if not as_json:
            console.print(f"checking [bold]{hub}[/bold] at {url} …", highlight=False)
        results = asyncio.run(
            check_environments(
                hub, url, token, slugs, store, timeout=timeout, dummy_password=password, via=endpoint.via
            )
        )
    if as_json:
        data = [result.to_dict() for result in results]
        typer.echo(json.dumps(data[0] if not slugs else {"environments": data, "skipped": skipped}, indent=2))
    else:
        for result in results:
            if result.environment:
                console.print(f" environment [bold]{escape(result.environment)}[/bold]", highlight=False)
            for step in result.steps:
                mark = "[green]ok[/green]  " if step.ok else "[red]FAIL[/red]"
                line = f"  {mark} {step.name:<14} {step.seconds:7.2f}s  {escape(step.detail)}"
                console.print(line, highlight=False)
            console.print(f"  total {result.total_seconds:.2f}s", highlight=False)
        for slug, why in skipped.items():
            console.print(f" environment [bold]{escape(slug)}[/bold] skipped: {escape(why)}", highlight=False)
    failed = [result for result in results if not result.ok]
    for result in failed:
        where = f" (environment {result.environment})" if result.environment else ""
        err_console.print(
            f"[red]check of {hub}{escape(where)} failed[/red]: {escape(result.error or '')}", highlight=False
        )
    if failed:
        raise typer.Exit(1)


@app.command()
@friendly_errors
def history(
    hub: Annotated[
        str | None, typer.Argument(help="Only this hub, or a cluster's upgrade steps (default: everything).")
    ] = None,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many events.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Deployments, restarts, synthetic checks and cluster upgrade steps, newest first."""
    from hubfleet.store import open_store

    state = resolve_state_dir(resolve_fleet_dir(fleet), state_dir)
    with open_store(state) as store:
        events = store.history(hub, limit)
    if as_json:
        typer.echo(json.dumps({"events": [event.to_dict() for event in events]}, indent=2))
        return
    if not events:
        console.print("no events recorded" + (f" for {hub}" if hub else ""))
        return
    table = Table(title="history" + (f" of {hub}" if hub else ""), title_justify="left")
    for column in ("time (UTC)", "hub", "kind", "", "summary"):
        table.add_column(column)
    for event in events:
        table.add_row(
            event.at.strftime("%Y-%m-%d %H:%M:%S"),
            event.hub,
            event.kind,
            "[green]✓[/green]" if event.ok else "[red]✗[/red]",
            event.summary,
        )
    console.print(table)

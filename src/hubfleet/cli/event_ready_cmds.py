"""`hubfleet events apply` (ready mode on kubernetes hubs, by the clock) and `hubfleet event ready HUB EVENT
--on|--off` (by hand): thin commands over hubfleet.deploy.ready_apply and the daemon's control socket."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from hubfleet.cli.common import (
    FleetOption,
    JsonOption,
    StateDirOption,
    console,
    err_console,
    friendly_errors,
    load_or_explain,
)
from hubfleet.cli.event_cmds import event_app, events_app
from hubfleet.settings import UserError, resolve_fleet_dir, resolve_state_dir

HubOption = Annotated[list[str] | None, typer.Option("--hub", help="Only this hub (repeatable).")]


@events_app.command("apply")
@friendly_errors
def apply(
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    hub: HubOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would change; change nothing, record nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Ready mode on kubernetes hubs as the clock says: open and close the windows, redeploy the hubs whose
    user placeholders change (not gated by staging: only how much is warm changes). For a scheduled CI job
    with the deploy pipeline's credentials; local hubs get ready mode from the daemon."""
    import asyncio

    from hubfleet.clock import utcnow
    from hubfleet.deploy.audit import deploy_actor
    from hubfleet.deploy.ready_apply import apply_ready_modes
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    for name in hub or []:
        config.require_hub(name)
    state = resolve_state_dir(fleet_dir, state_dir)
    with open_store(state) as store:
        report = asyncio.run(
            apply_ready_modes(
                config,
                state,
                store,
                utcnow(),
                hubs=set(hub) if hub else None,
                dry_run=dry_run,
                actor=deploy_actor(config.root, "hubfleet events apply"),
            )
        )
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    elif not report.hubs:
        console.print("no kubernetes hub has events: nothing to apply (local hubs: the daemon does it)")
    else:
        table = Table(title="ready mode" + (" (dry run)" if dry_run else ""), title_justify="left")
        for column in ("hub", "ready for", "placeholders", "windows", "action", "result"):
            table.add_column(column)
        for entry in report.hubs:
            table.add_row(
                entry.hub,
                entry.event or "—",
                str(entry.seats),
                escape("; ".join(f"{t.kind} {t.event}" for t in entry.transitions) or "—"),
                entry.action,
                escape(
                    (entry.outcome.result or "") + (": " if entry.outcome else "") + entry.message
                    if entry.outcome
                    else entry.message
                ),
            )
        console.print(table)
    if not report.ok:
        raise typer.Exit(1)


@event_app.command("ready")
@friendly_errors
def ready(
    hub: Annotated[str, typer.Argument(help="The hub.")],
    event: Annotated[str, typer.Argument(help="The event (its name in the hub's `events`).")],
    on: Annotated[
        bool | None, typer.Option("--on/--off", help="Start ready mode now, or stop it.", show_default=False)
    ] = None,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start (--on) or stop (--off) a hub's ready mode for an event by hand. An --off inside the event's
    window holds until the window ends (the schedule does not undo it); an --on lasts until the event ends.
    Local hubs: the running daemon does it (and warms the hub); kubernetes hubs: as `events apply`."""
    import asyncio

    from hubfleet.deploy.audit import deploy_actor
    from hubfleet.events.catalog import find_event

    if on is None:
        raise UserError("say --on (start ready mode now) or --off (stop it)")
    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    found = find_event(config, hub, event)
    state = resolve_state_dir(fleet_dir, state_dir)
    actor = deploy_actor(config.root, "hubfleet event ready")
    if config.clusters[config.hubs[hub].cluster].kind == "local":
        from hubfleet.daemon.event_schedule import CONTROL_OP
        from hubfleet.runtime.control_client import request

        payload = {"op": CONTROL_OP, "hub": hub, "event": found.name, "on": on, "actor": actor}
        reply = asyncio.run(request(state, payload))
        if not reply.get("ok"):
            raise UserError(str(reply.get("error") or "the daemon refused"))
        window = reply.get("window") or {}
        if as_json:
            typer.echo(json.dumps(reply, indent=2))
            return
        if on:
            warm = (window.get("details") or {}).get("warm") or {}
            said = ", ".join(f"{k}: {v}" for k, v in warm.items() if k != "hub" and v not in ([], None))
            console.print(
                f"{hub} is in ready mode for {found.name}" + (f" ({said})" if said else ""), highlight=False
            )
        else:
            console.print(f"{hub} left ready mode for {found.name}", highlight=False)
        return
    _kubernetes(config, state, hub, found.name, on, actor, as_json)


def _kubernetes(config, state, hub: str, event: str, on: bool, actor: str, as_json: bool) -> None:  # noqa: ANN001
    """Record the operator's window, then apply ready mode to the hub as `events apply` does."""
    import asyncio

    from hubfleet.clock import utcnow
    from hubfleet.deploy.ready_apply import apply_ready_modes
    from hubfleet.render.ready_mode import operator
    from hubfleet.store import events as stored
    from hubfleet.store import open_store

    found = next(e for e in config.events_of(hub) if e.name == event)
    with open_store(state) as store:
        current = stored.open_window(store, hub)
        if on:
            if utcnow() >= found.end:
                raise UserError(f"event {event} is over (it ended {found.end.isoformat()})")
            if current is not None and current.event != event:
                stored.end_window(store, hub, operator(actor))
            stored.start_window(store, hub, event, operator(actor), {"backend": "kubernetes"})
        else:
            if current is None or current.event != event:
                what = f"in ready mode for event {current.event}" if current else "not in ready mode"
                raise UserError(f"hub {hub} is {what}; nothing to switch off for {event}")
            stored.end_window(store, hub, operator(actor))
        report = asyncio.run(apply_ready_modes(config, state, store, utcnow(), hubs={hub}, actor=actor))
    entry = report.hubs[0] if report.hubs else None
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    elif entry is not None:
        result = f"{entry.outcome.result}: " if entry.outcome else ""
        console.print(
            f"{hub}: {'ready for ' + entry.event if entry.event else 'not in ready mode'}, "
            f"{entry.seats} user placeholders; {entry.action}: {result}{entry.message}",
            highlight=False,
            markup=False,
        )
    if entry is not None and entry.action == "blocked":
        err_console.print(f"{hub}: {entry.message}", highlight=False, markup=False)
    if not report.ok:
        raise typer.Exit(1)

"""`hubfleet event report HUB EVENT [--json] [--send]`: an event's report, made now from the store."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from hubfleet.cli.common import (
    FleetOption,
    JsonOption,
    StateDirOption,
    console,
    friendly_errors,
    load_or_explain,
)
from hubfleet.cli.event_cmds import event_app
from hubfleet.settings import resolve_fleet_dir, resolve_state_dir


@event_app.command("report")
@friendly_errors
def report(
    hub: Annotated[str, typer.Argument(help="The event's hub.")],
    event: Annotated[str, typer.Argument(help="The event's name (see `hubfleet events`).")],
    send: Annotated[
        bool,
        typer.Option(
            "--send", help="Also mail it to the community's contacts with `reports: true` (again, if sent)."
        ),
    ] = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make the event's report now (peaks, server-hours, spawn p50/p95 and failures from the hub's own
    metrics, readiness tests) and store it; the daemon makes and mails it by itself once the event is over."""
    import asyncio

    from hubfleet.daemon.event_reports import report_and_send
    from hubfleet.events.catalog import find_event
    from hubfleet.events.report import report_text
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    found = find_event(config, hub, event)
    with open_store(resolve_state_dir(fleet_dir, state_dir)) as store:
        record = asyncio.run(report_and_send(config, store, found, hub, send=send))
    if as_json:
        payload = {**record.report, "sent_to": record.sent_to, "send_error": record.error}
        typer.echo(json.dumps(payload, indent=2))
        return
    console.print(report_text(record.report), markup=False, highlight=False)
    if send:
        if record.sent_to:
            console.print(f"sent to {', '.join(record.sent_to)}", markup=False)
        elif not record.error:
            console.print("not sent: no contact of the community has `reports: true`", markup=False)
    if record.error:
        console.print(f"[red]sending failed:[/red] {record.error}")
        raise typer.Exit(1)

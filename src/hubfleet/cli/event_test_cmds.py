"""`hubfleet event test HUB`: the readiness test before an event's doors open (hubfleet.events.readiness)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

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
from hubfleet.cli.event_cmds import event_app
from hubfleet.settings import resolve_fleet_dir, resolve_state_dir

if TYPE_CHECKING:
    from hubfleet.events.readiness import ReadinessReport


@event_app.command("test")
@friendly_errors
def test(
    hub: Annotated[str, typer.Argument(help="The hub to test.")],
    event: Annotated[
        str | None,
        typer.Option(
            "--event",
            help="The event whose environment, arrival and target to use (default: the "
            "hub's current or next event).",
        ),
    ] = None,
    users: Annotated[
        int | None,
        typer.Option(
            "--users", help="Simulated attendees (default: the event's readiness_test_users, else 10)."
        ),
    ] = None,
    arrival: Annotated[
        str | None,
        typer.Option(
            "--arrival",
            help="How fast they arrive, such as '60 in 3m' (default: the event's; "
            "without an event, all at once).",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=1,
            help="Stop the attendees after this many seconds (default: the last "
            "arrival plus 300 s); test users are removed in any case.",
        ),
    ] = None,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Simulated attendees sign in, start servers, run code and stop, as an event's people will; the report
    gives spawn and first-execution latency (p50/p95/max), failures with their causes and pass/fail against
    the event's target. The result is stored; exits 1 when the test fails."""
    from hubfleet.clock import utcnow
    from hubfleet.config.models_events import parse_arrival
    from hubfleet.events.catalog import find_event
    from hubfleet.events.readiness import (
        check_users,
        default_event,
        default_users,
        record,
        run_readiness_test,
    )
    from hubfleet.settings import UserError
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    hub_config = config.require_hub(hub)
    chosen = find_event(config, hub, event) if event is not None else default_event(config, hub, utcnow())
    if arrival is not None:
        try:
            rush = parse_arrival(arrival)
        except ValueError as exc:
            raise UserError(f"--arrival: {exc}") from None
    else:
        rush = chosen.rush() if chosen is not None else None
    count = users if users is not None else default_users(chosen)
    check_users(hub_config, count)
    state = resolve_state_dir(fleet_dir, state_dir)
    if not as_json:
        what = f"event {chosen.name}" if chosen else "no event"
        pace = f"{rush.people} in {rush.seconds:g}s" if rush else "all at once"
        console.print(
            f"testing [bold]{hub}[/bold] ({what}): {count} attendees, arriving {pace} …", highlight=False
        )
    report = asyncio.run(
        run_readiness_test(
            config, hub, state_dir=state, users=count, arrival=rush, event=chosen, timeout=timeout
        )
    )
    with open_store(state) as store:
        record(store, report)
    if as_json:
        typer.echo(report.to_json())
    else:
        _print(report)
    for problem in report.cleanup_problems:
        err_console.print(f"[yellow]test user not removed[/yellow]: {escape(problem)}", highlight=False)
    if not report.passed:
        err_console.print(f"[red]readiness test of {hub} {escape(report.verdict)}[/red]", highlight=False)
        raise typer.Exit(1)


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}s"


def _print(report: ReadinessReport) -> None:
    table = Table(title=f"readiness test of {report.hub}", title_justify="left")
    for column in ("", "count", "p50", "p95", "max"):
        table.add_column(column)
    for label, latency in (("spawn", report.spawn), ("first execution", report.first_execution)):
        table.add_row(
            label, str(latency.count), _seconds(latency.p50), _seconds(latency.p95), _seconds(latency.max)
        )
    console.print(table)
    for attendee in report.attendees:
        if attendee.error is not None:
            console.print(f"  [red]FAIL[/red] {attendee.username}: {escape(attendee.error)}", highlight=False)
    mark = "[green]passed[/green]" if report.passed else "[red]failed[/red]"
    console.print(
        f"{mark} (target: spawn p95 ≤ {report.target_p95_seconds:g}s and no failures; "
        f"took {report.seconds:.1f}s, clean-up {report.cleanup_seconds:.1f}s)",
        highlight=False,
    )

"""`hubfleet backup`, `hubfleet backups list` and `hubfleet restore`: users' files and hub databases."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
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
from hubfleet.cli.daemon_ops import control, daemon_runs
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.settings import UserError, resolve_fleet_dir, resolve_state_dir
from hubfleet.units import human_bytes

if TYPE_CHECKING:  # the store and restic's modules are imported by the commands that use them: every
    # `hubfleet` command would otherwise pay for SQLAlchemy and Alembic at start
    from hubfleet.backup.hub_backup import BackupSetup

backups_app = typer.Typer(help="The fleet's backups (restic snapshots).", no_args_is_help=True)
app.add_typer(backups_app, name="backups")


def set_up(config: FleetConfig, state: Path) -> BackupSetup:
    """The fleet's backup setup, saying so on stderr when it waits for another backup or restore (the daemon's
    schedule may be in the middle of one)."""

    def waiting() -> None:
        err_console.print(
            "waiting for another backup or restore of this fleet to finish (a scheduled one, or another "
            "command)...",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    from hubfleet.backup.hub_backup import backup_setup

    return dataclasses.replace(backup_setup(config, state), on_wait=waiting)


def local_hub(config: FleetConfig, name: str) -> Hub:
    """The hub, when hubfleet backs it up: on Kubernetes the homes are the cloud's volumes."""
    hub = config.require_hub(name)
    cluster = config.cluster_of(hub)
    if cluster.kind != "local":
        raise UserError(
            f"hub {name} runs on {cluster.kind} cluster {cluster.name}: its homes and database are the "
            "cloud's volumes; back them up with the provider's snapshots (docs/backups.md, 'Kubernetes hubs')"
        )
    return hub


def runs_unsupervised(config: FleetConfig, hub: Hub) -> bool:
    """Whether the hub answers on its port though no daemon runs it (a daemon killed without `down`)."""
    import httpx

    url = config.internal_url(hub)
    try:
        return url is not None and httpx.get(f"{url}/hub/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


@app.command()
@friendly_errors
def backup(
    hub: Annotated[
        str | None, typer.Argument(help="One hub (default: every hub whose backups are on).")
    ] = None,
    new_repository: Annotated[
        bool,
        typer.Option(
            "--new-repository", help="Make a new, empty repository where the configured one has gone missing."
        ),
    ] = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Back up hubs now: their users' homes and a consistent copy of each hub's database."""
    from hubfleet.backup.hub_backup import back_up_hub
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    if hub is not None:
        hubs = [local_hub(config, hub)]
        if config.settings.backups is not None and config.backup_policy(hubs[0]) is None:
            raise UserError(f"hub {hub} has `backup: {{enabled: false}}` in its file; it is not backed up")
    else:
        hubs = [h for h in config.local_hubs() if config.backup_policy(h) is not None]
    state = resolve_state_dir(fleet_dir, state_dir)
    setup = set_up(config, state)
    if not hubs:
        raise UserError("no local hub has backups on")
    failed = []
    with open_store(state) as store:
        for item in hubs:
            try:
                summary = back_up_hub(setup, store, item, "manual", new=new_repository)
            except (UserError, OSError) as exc:
                if len(hubs) == 1:  # one line says it all
                    raise UserError(f"{item.name}: backup failed: {exc}") from None
                err_console.print(
                    f"{item.name}: backup failed: {exc}", highlight=False, markup=False, soft_wrap=True
                )
                failed.append(item.name)
                continue
            console.print(
                f"{item.name}: snapshot {summary.snapshot_id[:8]}, {summary.files} files, "
                f"{human_bytes(summary.size_bytes)} ({human_bytes(summary.added_bytes)} new)",
                highlight=False,
                soft_wrap=True,
            )
    if failed:
        raise UserError(f"{len(failed)} of {len(hubs)} backup(s) failed: {', '.join(failed)}")


@backups_app.command("list")
@friendly_errors
def backups_list(
    hub: Annotated[str, typer.Argument(help="The hub.")],
    as_json: JsonOption = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """A hub's snapshots (newest last) and its last backup runs."""
    from hubfleet.backup import records
    from hubfleet.backup.hub_backup import hub_snapshots
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    local_hub(config, hub)
    state = resolve_state_dir(fleet_dir, state_dir)
    setup = set_up(config, state)
    snapshots = hub_snapshots(setup, hub)
    with open_store(state) as store:
        runs = {r.snapshot_id[:8]: r for r in records.hub_runs(store, hub, limit=500) if r.snapshot_id}
    if as_json:
        rows = []
        for snap in snapshots:
            run = runs.get(snap.id[:8])
            rows.append(
                {
                    **snap.to_json(),
                    "size_bytes": run.size_bytes if run else None,
                    "files": run.files if run else None,
                    "trigger": run.trigger if run else None,
                }
            )
        typer.echo(
            json.dumps({"hub": hub, "repository": setup.repository.location, "snapshots": rows}, indent=2)
        )
        return
    if not snapshots:
        console.print(f"hub {hub} has no backups yet; take one with `hubfleet backup {hub}`")
        return
    table = Table(title=f"backups of {hub} in {setup.repository.location}", title_justify="left")
    for column in ("snapshot", "taken (UTC)", "files", "size", "by"):
        table.add_column(column)
    for snap in snapshots:
        run = runs.get(snap.id[:8])
        table.add_row(
            snap.short_id,
            snap.time.strftime("%Y-%m-%d %H:%M:%S"),
            str(run.files) if run and run.files is not None else "-",
            human_bytes(run.size_bytes) if run and run.size_bytes is not None else "-",
            run.trigger if run else "-",
        )
    console.print(table)


@app.command()
@friendly_errors
def restore(
    hub: Annotated[str, typer.Argument(help="The hub.")],
    user: Annotated[str | None, typer.Option("--user", help="Restore this user's files.")] = None,
    path: Annotated[
        str | None, typer.Option("--path", help="Only this file or folder of the home (relative to it).")
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="The backup at or before this time (2026-11-30T14:00, UTC unless it says), "
            "or a snapshot id; default: the newest.",
        ),
    ] = None,
    to: Annotated[
        Path | None, typer.Option("--to", help="Restore into this new directory instead of the user's home.")
    ] = None,
    database: Annotated[
        bool, typer.Option("--database", help="Bring back the hub's database (its users, groups, tokens).")
    ] = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Restore one user's files into a new folder in their home (nothing there is overwritten), or the hub's
    database."""
    from hubfleet.backup.hub_backup import restore_database, restore_user, restore_user_to

    if database == (user is not None):
        raise UserError("say what to restore: --user NAME (their files) or --database (the hub's users)")
    if database and (path or to):
        raise UserError("--path and --to go with --user, not --database")
    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    hub_settings = local_hub(config, hub)
    state = resolve_state_dir(fleet_dir, state_dir)
    setup = set_up(config, state)
    if user is not None:
        if to is not None:
            folder, snapshot = restore_user_to(setup, hub, user, to.resolve(), path=path, at=at)
        else:
            folder, snapshot = restore_user(setup, hub, user, path=path, at=at)
        console.print(
            f"restored {path or 'the home'} of {user} as of {snapshot.time:%Y-%m-%d %H:%M:%S} UTC "
            f"(snapshot {snapshot.short_id}) into {folder}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return
    held = daemon_runs(state, hub)
    if not held and runs_unsupervised(config, hub_settings):
        raise UserError(
            f"hub {hub} is running without its daemon (it was killed without `hubfleet down`): its database "
            "cannot be swapped under it; run `hubfleet up --detach` (which stops what the old daemon left) "
            "and restore again"
        )
    kept, snapshot = restore_database(
        setup,
        hub,
        at=at,
        hold=(lambda: control(state, {"op": "hold", "hub": hub, "reason": "database restore"}))
        if held
        else None,
        release=(lambda: control(state, {"op": "release", "hub": hub})) if held else None,
    )
    console.print(
        f"restored the database of {hub} as of {snapshot.time:%Y-%m-%d %H:%M:%S} UTC (snapshot "
        f"{snapshot.short_id})"
        + (f"; the one it replaced is kept as {kept}" if kept else "")
        + ("; the hub was restarted" if held else ""),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )

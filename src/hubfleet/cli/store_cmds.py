"""`hubfleet store backup / backups / restore`: consistent copies of the control-plane store, the way back."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hubfleet.cli.app import app
from hubfleet.cli.common import FleetOption, JsonOption, StateDirOption, console, friendly_errors
from hubfleet.settings import UserError, resolve_fleet_dir, resolve_state_dir

store_app = typer.Typer(
    help="The control-plane store: backups (SQLite's online backup) and restore.", no_args_is_help=True
)
app.add_typer(store_app, name="store")


def _store_file(fleet: Path | None, state_dir: Path | None) -> Path:
    from hubfleet.store.db import DB_FILENAME

    return resolve_state_dir(resolve_fleet_dir(fleet), state_dir) / DB_FILENAME


@store_app.command("backup")
@friendly_errors
def backup(
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write the backup here (default: <state>/backups/, kept with the daemon's)."
        ),
    ] = None,
) -> None:
    """A consistent copy of the store (safe while the fleet runs), verified, mode 0600."""
    from hubfleet.store import safety

    db_path = _store_file(fleet, state_dir)
    made = safety.backup(db_path, out.expanduser().resolve()) if out else safety.take_backup(db_path)
    console.print(f"store backed up to {made}", highlight=False, markup=False, soft_wrap=True)


@store_app.command("backups")
@friendly_errors
def backups(fleet: FleetOption = None, state_dir: StateDirOption = None, as_json: JsonOption = False) -> None:
    """The backups in <state>/backups/, newest first."""
    from hubfleet.store import safety

    found = safety.list_backups(_store_file(fleet, state_dir))
    rows = [
        {
            "path": str(p),
            "at": datetime.fromtimestamp(p.stat().st_mtime, UTC).isoformat(timespec="seconds"),
            "bytes": p.stat().st_size,
        }
        for p in found
    ]
    if as_json:
        typer.echo(json.dumps({"backups": rows}, indent=2))
        return
    if not rows:
        console.print(
            "no backups yet (the daemon takes one at start and then hourly; or `hubfleet store backup`)"
        )
        return
    table = Table(title="store backups, newest first", title_justify="left")
    for column in ("taken (UTC)", "size", "file"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["at"]).replace("+00:00", ""), f"{int(row['bytes']) / 1024:.0f} KiB", str(row["path"])
        )
    console.print(table)


@store_app.command("restore")
@friendly_errors
def restore(
    backup_file: Annotated[
        Path, typer.Argument(metavar="BACKUP", help="A backup file (see `hubfleet store backups`).")
    ],
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Replace the store with a verified copy of BACKUP, with the fleet down (`hubfleet down`).

    The store it replaces is kept beside it (hubfleet.sqlite.damaged-<time> or .replaced-<time>), never
    deleted."""
    from hubfleet.daemon.detached import daemon_lock
    from hubfleet.runtime.status_file import read_status
    from hubfleet.store import open_store, safety

    db_path = _store_file(fleet, state_dir)
    state = db_path.parent
    if status := read_status(state):
        raise UserError(
            f"the fleet is up (daemon pid {status['pid']}); stop it with `hubfleet down`, then restore"
        )
    with daemon_lock(state):  # no daemon starts while the file is swapped
        done = safety.restore(db_path, backup_file)
        open_store(state).close()  # brings an older backup's schema up to this hubfleet's
    kept = f"; the previous store is kept as {done.set_aside}" if done.set_aside else ""
    console.print(
        f"store {done.store} restored from {done.source} (revision {done.revision}){kept}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )

"""`hubfleet user-db backup|restore|reset HUB USER`: one user's own database on a local hub."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hubfleet.cli.app import app
from hubfleet.cli.common import FleetOption, StateDirOption, console, friendly_errors, load_or_explain
from hubfleet.settings import UserError, resolve_fleet_dir, resolve_state_dir

if TYPE_CHECKING:
    from hubfleet.isolation.user_postgres import UserDb

user_db_app = typer.Typer(
    help="Each user's own PostgreSQL database on hubs with `user_database` (local clusters).",
    no_args_is_help=True,
)
app.add_typer(user_db_app, name="user-db")

HubArg = Annotated[str, typer.Argument(help="The hub.")]
UserArg = Annotated[str, typer.Argument(help="The hub's user (their JupyterHub name).")]


def _db(hub: str, user: str, fleet: Path | None, state_dir: Path | None) -> UserDb:
    from hubfleet.backup.user_dbs import existing

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    return existing(config, resolve_state_dir(fleet_dir, state_dir), hub, user)


@user_db_app.command("backup")
@friendly_errors
def backup(
    hub: HubArg,
    user: UserArg,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="The dump file (default: ./<hub>-<user>.pgdump).", show_default=False),
    ] = None,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Write a consistent dump of the user's database (pg_dump's custom format; started briefly if need
    be)."""
    from hubfleet.backup.user_dbs import backup as dump

    db = _db(hub, user, fleet, state_dir)
    dest = out if out is not None else Path(f"{hub}-{user}.pgdump")
    dump(db, dest.resolve())
    console.print(
        f"{hub}: {user}'s database written to {dest} ({dest.stat().st_size} bytes)", highlight=False
    )


@user_db_app.command("restore")
@friendly_errors
def restore(
    hub: HubArg,
    user: UserArg,
    file: Annotated[Path, typer.Argument(help="A dump from `hubfleet user-db backup` (or a hub backup).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Replace the user's database with a dump (their open sessions are ended)."""
    from hubfleet.backup.user_dbs import restore as put_back
    from hubfleet.isolation.user_postgres import UserDbError, check_dump

    db = _db(hub, user, fleet, state_dir)
    if not file.is_file():
        raise UserError(f"{file}: no such file")
    try:
        check_dump(file)
    except UserDbError as exc:
        raise UserError(str(exc)) from None
    _confirm(yes, f"Replace {user}'s database on hub {hub} with {file}? What it holds now is lost.")
    put_back(db, file.resolve())
    console.print(f"{hub}: {user}'s database restored from {file}", highlight=False)


@user_db_app.command("reset")
@friendly_errors
def reset(
    hub: HubArg,
    user: UserArg,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Empty the user's database (dropped and made again; their open sessions are ended)."""
    from hubfleet.backup.user_dbs import reset as empty

    db = _db(hub, user, fleet, state_dir)
    _confirm(yes, f"Empty {user}'s database on hub {hub}? Everything in it is lost (take a backup first).")
    empty(db)
    console.print(f"{hub}: {user}'s database is empty", highlight=False)


def _confirm(yes: bool, question: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UserError("not asking without a terminal: pass --yes to go ahead")
    if not typer.confirm(question, default=False):
        raise UserError("nothing done")

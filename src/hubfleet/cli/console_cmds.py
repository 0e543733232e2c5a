"""`hubfleet console` (the web console on its own), `console-password`, `console-token`."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import sys
from typing import Annotated

import typer
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
from hubfleet.config.fleet import FleetConfig
from hubfleet.settings import UserError, resolve_fleet_dir, resolve_state_dir

token_app = typer.Typer(help="API tokens for scripts: create, list, revoke.", no_args_is_help=True)
app.add_typer(token_app, name="console-token")


def _require_account(config: FleetConfig, username: str) -> None:
    from hubfleet.console.access import find_account

    if find_account(config, username) is None:
        known = ", ".join(a.username for a in config.settings.console.accounts) or "none yet"
        raise UserError(
            f"no console account '{username}' in fleet.yaml console.accounts (accounts: {known}); "
            "add it there first, with its role"
        )


@app.command("console")
@friendly_errors
def console_cmd(
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    port: Annotated[
        int | None, typer.Option("--port", min=1, max=65535, help="Port (default: a free one).")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    public_url: Annotated[
        str | None, typer.Option("--public-url", help="URL people open, if a TLS proxy is in front.")
    ] = None,
) -> None:
    """Serve the web console (and /metrics) on its own, reading the fleet's store; Ctrl-C stops it."""
    from hubfleet.console.app import create_app
    from hubfleet.console.reload import FleetReloader
    from hubfleet.console.server import start_console
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    state = resolve_state_dir(fleet_dir, state_dir)
    if not config.settings.console.accounts:
        console.print(
            "[yellow]fleet.yaml has no console.accounts: nobody can sign in yet[/yellow] "
            "(see docs/console.md)"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    async def serve() -> None:
        with open_store(state) as store:
            reloader = FleetReloader(config)
            app = create_app(store, reloader, state_dir=state, public_url=public_url)
            server = await start_console(app, host=host, port=port, port_setting="--port")
            console.print(f"console: {server.url}", highlight=False)
            sys.stdout.flush()
            try:
                await asyncio.Event().wait()
            finally:
                await server.stop()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        console.print("console stopped")


@app.command("console-password")
@friendly_errors
def console_password(
    username: Annotated[str, typer.Argument(help="An account of fleet.yaml console.accounts.")],
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    stdin: Annotated[bool, typer.Option("--stdin", help="Read the password from standard input.")] = False,
    remove: Annotated[
        bool, typer.Option("--remove", help="Remove the password (no password sign-in).")
    ] = False,
    unlock: Annotated[
        bool,
        typer.Option(
            "--unlock", help="Only lift a lock after failed sign-ins; keep the password and tokens."
        ),
    ] = False,
) -> None:
    """Set a console account's password (asked twice; stored hashed). Signs the account out everywhere,
    revokes its API tokens and lifts a lock after failed sign-ins."""
    from hubfleet.console import accounts
    from hubfleet.store import open_store

    if remove and unlock:
        raise UserError("--remove and --unlock do not go together")
    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    with open_store(resolve_state_dir(fleet_dir, state_dir)) as store:
        if remove:
            revoked = len([t for t in accounts.list_tokens(store, username) if t.active])
            removed = accounts.remove_password(store, username)
            ended = accounts.end_sessions_of(store, username)
            message = f"password of '{username}' removed" if removed else f"'{username}' had no password"
            console.print(message + _signed_out(ended, revoked))
            return
        if unlock:
            forgotten = accounts.unlock(store, username)
            console.print(f"'{username}' may sign in again ({forgotten} recent failed sign-in(s) forgotten)")
            return
        _require_account(config, username)
        if stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass(f"new console password for {username}: ")
            if getpass.getpass("again: ") != password:
                raise UserError("the two passwords differ; nothing changed")
        problem = accounts.password_problem(password)
        if problem:
            raise UserError(f"{problem}; nothing changed")
        revoked = accounts.set_password(store, username, password)
        ended = accounts.end_sessions_of(store, username)
    console.print(f"password of '{username}' set" + _signed_out(ended, revoked))


def _signed_out(sessions: int, tokens: int) -> str:
    parts = [f"{sessions} session(s) signed out"] if sessions else []
    parts += [f"{tokens} API token(s) revoked"] if tokens else []
    return "; " + ", ".join(parts) if parts else ""


@token_app.command("create")
@friendly_errors
def token_create(
    username: Annotated[str, typer.Argument(help="The account the token acts as.")],
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    name: Annotated[str, typer.Option("--name", help="What the token is for.")] = "",
    expires_days: Annotated[
        float | None, typer.Option("--expires-days", min=0.001, help="Expire after this many days.")
    ] = None,
) -> None:
    """Create an API token and print it once (only its hash is kept)."""
    from hubfleet.console import accounts
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    _require_account(load_or_explain(fleet_dir), username)
    with open_store(resolve_state_dir(fleet_dir, state_dir)) as store:
        token, info = accounts.create_token(store, username, name, expires_days)
    # the token alone on stdout, so `TOKEN=$(hubfleet console-token create ...)` works; the rest on stderr
    typer.echo(token)
    typer.echo(f"token {info.id} for '{username}' created; it is shown only now", err=True)


@token_app.command("list")
@friendly_errors
def token_list(
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    username: Annotated[str | None, typer.Option("--user", help="Only this account's tokens.")] = None,
    as_json: JsonOption = False,
) -> None:
    """API tokens (never the tokens themselves): owner, name, prefix, created, expires, last used."""
    from hubfleet.console import accounts
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    with open_store(resolve_state_dir(fleet_dir, state_dir)) as store:
        tokens = accounts.list_tokens(store, username)
    if as_json:
        typer.echo(json.dumps([t.to_dict() for t in tokens], indent=2))
        return
    table = Table(title="console API tokens", title_justify="left")
    for column in ("id", "user", "name", "prefix", "created", "expires", "last used", "state"):
        table.add_column(column)
    for t in tokens:
        state = "active" if t.active else "revoked" if t.revoked_at else "expired"
        table.add_row(
            str(t.id),
            t.username,
            t.name,
            t.prefix + "…",
            f"{t.created_at:%Y-%m-%d %H:%M}",
            f"{t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "never",
            f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never",
            state,
        )
    console.print(table)


@token_app.command("revoke")
@friendly_errors
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="The id shown by `hubfleet console-token list`.")],
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Revoke an API token at once."""
    from hubfleet.console import accounts
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    with open_store(resolve_state_dir(fleet_dir, state_dir)) as store:
        if not accounts.revoke_token(store, token_id):
            raise UserError(f"no active token {token_id}; see `hubfleet console-token list`")
    console.print(f"token {token_id} revoked")

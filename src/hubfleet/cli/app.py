"""The `hubfleet` Typer app and its global options. It imports no command module: each command module
imports `app` from here and registers itself, and `cli/main.py` imports them all (no import circle)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.main import get_command_name, solve_typer_info_defaults

from hubfleet import __version__
from hubfleet.cli import common


class _Hubfleet(typer.Typer):
    """Run as the `hubfleet` command, the app builds only the command asked for: Typer otherwise builds every
    one of its ~70 commands (reading each function's signature) on each start, ~0.1 s of CPU that every
    `hubfleet status` and every test's CLI run paid. Help, an unknown name and in-process callers (Typer's
    CliRunner builds the app itself) see every command."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs:  # the console script: the command line is sys.argv
            self._keep_only(next((a for a in sys.argv[1:] if not a.startswith("-")), None))
        return super().__call__(*args, **kwargs)

    def _keep_only(self, name: str | None) -> None:
        commands = [
            c for c in self.registered_commands if (c.name or get_command_name(c.callback.__name__)) == name
        ]
        groups = [g for g in self.registered_groups if solve_typer_info_defaults(g).name == name]
        if commands or groups:
            self.registered_commands, self.registered_groups = commands, groups


app = _Hubfleet(
    name="hubfleet",
    help="Control plane for a managed JupyterHub service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    common.DEBUG["on"] = debug
    if version:
        typer.echo(__version__)
        raise typer.Exit()

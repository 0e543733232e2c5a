"""The `hubfleet` Typer app and its global options. It imports no command module: each command module
imports `app` from here and registers itself, and `cli/main.py` imports them all (no import circle)."""

from __future__ import annotations

from typing import Annotated

import typer

from hubfleet import __version__
from hubfleet.cli import common

app = typer.Typer(
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

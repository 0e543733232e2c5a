"""The `hubfleet` command: thin Typer commands, each calling one plain function."""

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


def _register() -> None:
    # Each module adds its commands to `app`; imported here so the command list lives in one place.
    from hubfleet.cli import (  # noqa: F401
        check_cmds,
        config_cmds,
        console_cmds,
        deploy_cmds,
        fleet_cmds,
        monitor_cmds,
        monitor_export_cmds,
        render_cmds,
        secrets_cmds,
        usage_cmds,
    )


_register()

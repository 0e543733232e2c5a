"""`hubfleet validate` and `hubfleet schema`: thin wrappers over hubfleet.config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hubfleet.cli.app import app
from hubfleet.cli.common import FleetOption, friendly_errors
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.validate import validate_fleet
from hubfleet.settings import Settings, resolve_fleet_dir


def _fleet_dir(flag: Path | None) -> Path:
    """Like resolve_fleet_dir, but a named directory that does not exist is reported by the loader
    in the usual `file:line:col: message` format."""
    candidate = flag or Settings().fleet
    if candidate is not None:
        return Path(candidate).expanduser()
    return resolve_fleet_dir(None)


@app.command()
@friendly_errors
def validate(fleet: FleetOption = None) -> None:
    """Check every fleet file and cross-file rule; print each error as file:line:col: message."""
    root = _fleet_dir(fleet)
    config, errors = validate_fleet(root)
    if errors or config is None:
        for error in errors:
            typer.echo(str(error))
        typer.echo(f"{len(errors)} error(s) in {root}", err=True)
        raise typer.Exit(1)
    typer.echo(summary(config))


def summary(config: FleetConfig) -> str:
    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    communities = count(len(config.communities), "community").replace("communitys", "communities")
    return (
        f"fleet '{config.settings.name}' is valid: {communities}, "
        f"{count(len(config.hubs), 'hub')}, {count(len(config.clusters), 'cluster')}"
    )


@app.command()
@friendly_errors
def schema(
    fleet: FleetOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Directory for the JSON Schema files (default: <fleet>/schema).", show_default=False
        ),
    ] = None,
) -> None:
    """Write the JSON Schema of each fleet file kind, for editors (yaml-language-server)."""
    from hubfleet.config.schema import write_schemas

    out_dir = out if out is not None else resolve_fleet_dir(fleet) / "schema"
    for path in write_schemas(out_dir):
        typer.echo(f"wrote {path}")

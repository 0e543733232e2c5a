"""`hubfleet init DIR`: a new fleet repository (thin wrapper over hubfleet.scaffold)."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from hubfleet.cli.app import app
from hubfleet.cli.common import friendly_errors


class ClusterKind(StrEnum):
    local = "local"
    gcp = "gcp"
    aws = "aws"
    azure = "azure"


@app.command()
@friendly_errors
def init(
    directory: Annotated[Path, typer.Argument(help="Where to write the fleet: a new or empty directory.")],
    cluster: Annotated[
        ClusterKind,
        typer.Option(
            "--cluster",
            help="Where the hubs run: this machine (local), or a Kubernetes cluster on Google Cloud (gcp), "
            "AWS (aws) or Azure (azure).",
        ),
    ] = ClusterKind.local,
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="The fleet's name (default: from the directory's name).", show_default=False
        ),
    ] = None,
    add_missing: Annotated[
        bool,
        typer.Option(
            "--add-missing",
            help="Write only the files that are missing from DIR; no existing file is changed.",
        ),
    ] = False,
    identity: Annotated[
        Path | None,
        typer.Option(
            "--identity",
            help="Your age identity, reused if it exists, else created (default: $HUBFLEET_AGE_IDENTITY, "
            "else ~/.config/hubfleet/age-identity.txt).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Scaffold a fleet repository: fleet.yaml, one cluster, one community with a staging and a prod hub,
    encrypted secrets with your age key, .gitignore, editor schemas, pre-commit and CI pipelines."""
    from hubfleet.scaffold import scaffold

    directory = directory.expanduser()
    result = scaffold(directory, cluster=cluster.value, name=name, add_missing=add_missing, identity=identity)
    shown = os.path.relpath(directory) if not directory.is_absolute() else str(directory)
    for path in result.created:
        typer.echo(f"created {path.relative_to(directory)}")
    if result.kept:
        typer.echo(f"kept {len(result.kept)} existing file(s) as they are")
    if result.identity is not None:
        how = "created (mode 0600)" if result.identity_created else "reused"
        typer.echo(
            f"age identity {result.identity}: {how}, outside git; fleet.yaml records its public key "
            "(back the identity up: it reads every secret)"
        )
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if not result.created:
        typer.echo(f"nothing to add: {shown} has every file init writes")
        return
    typer.echo(
        f"next: edit the lines marked EDIT (grep -rn EDIT {shown}), then `hubfleet validate --fleet {shown}`"
    )
    typer.echo(f"      ({shown}/README.md lists the next steps)")

"""`hubfleet render` (what would be applied to a hub) and `hubfleet export` (a standalone bundle)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hubfleet.cli.app import app
from hubfleet.cli.common import FleetOption, StateDirOption, friendly_errors, load_or_explain
from hubfleet.settings import UserError, resolve_fleet_dir, resolve_state_dir


@app.command()
@friendly_errors
def render(
    hub: Annotated[str, typer.Argument(help="Name of the hub.")],
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Print every effective setting of HUB with the layer and file:line it came from instead.",
        ),
    ] = False,
) -> None:
    """Print what would be applied to HUB: jupyterhub_config.py (local) or z2jh values YAML (kubernetes).

    No secret values are printed: local configs read them from the environment, kubernetes secrets go
    to a separate values file at deploy time. With --explain: each setting and where it came from (fleet
    defaults, cluster defaults, community defaults, the hub file, or a built-in default)."""
    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    config.require_hub(hub)
    the_hub = config.hubs[hub]
    if explain:
        from hubfleet.config.layers import explain_hub

        typer.echo(explain_hub(config, the_hub), nl=False)
        return
    state = resolve_state_dir(fleet_dir, state_dir)
    if config.cluster_of(the_hub).kind == "kubernetes":
        from hubfleet.backends.kubernetes import KubernetesBackend

        typer.echo(KubernetesBackend(config, state).render(the_hub), nl=False)
    else:
        from hubfleet.backends.local import LocalBackend

        typer.echo(LocalBackend(config, state).render(the_hub), nl=False)


@app.command()
@friendly_errors
def export(
    hub: Annotated[str, typer.Argument(help="Name of the hub.")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the bundle into.")],
    fleet: FleetOption = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite files in a non-empty --out.")] = False,
    with_data: Annotated[
        bool,
        typer.Option("--with-data", help="Put the hub's users and their files in the bundle too."),
    ] = False,
    state_dir: StateDirOption = None,
) -> None:
    """Write a standalone bundle of HUB that runs without hubfleet (config, README with the exact
    commands; secrets named as placeholders, never copied); with --with-data its users and their files."""
    from hubfleet.deploy.export import HubData, export_hub

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    config.require_hub(hub)
    data = None
    if with_data:
        from hubfleet.backup.dumps import HUB_DATABASE, copy_sqlite
        from hubfleet.runtime.layout import layout

        where = layout(resolve_state_dir(fleet_dir, state_dir))
        data = HubData(where.hub_data(hub) / HUB_DATABASE, where.homes(hub), copy_sqlite)
        if not data.database.exists():
            raise UserError(
                f"hub {hub} has no database in {where.hub_data(hub)} (it never ran here, or its data was "
                "purged); export it without --with-data"
            )
    result = export_hub(config, config.hubs[hub], out, force=force, data=data)
    for path in result.files:
        typer.echo(f"wrote {path}")
    if with_data:
        typer.echo(f"with {len(result.users)} user(s) and the homes in {result.out / 'homes'}")
    typer.echo(f"see {result.out / 'README.md'} for how to run it")

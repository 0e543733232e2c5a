"""`hubfleet validate` and `hubfleet schema`: thin wrappers over hubfleet.config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hubfleet.cli.app import app
from hubfleet.cli.common import FleetOption, StateDirOption, friendly_errors
from hubfleet.config.cache import FleetCache
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.rules_costs import cost_warnings
from hubfleet.config.rules_secrets import token_key_warnings
from hubfleet.config.rules_support import support_warnings
from hubfleet.config.validate import validate_fleet
from hubfleet.settings import Settings, UserError, resolve_fleet_dir, resolve_state_dir


def _fleet_dir(flag: Path | None) -> Path:
    """Like resolve_fleet_dir, but a named directory that does not exist is reported by the loader
    in the usual `file:line:col: message` format."""
    candidate = flag or Settings().fleet
    if candidate is not None:
        return Path(candidate).expanduser()
    return resolve_fleet_dir(None)


@app.command()
@friendly_errors
def validate(
    fleet: FleetOption = None,
    chart: Annotated[
        bool,
        typer.Option(
            "--chart",
            help="Also run every Kubernetes hub's values through `helm template` with the real z2jh chart "
            "(results cached in the state directory: unchanged hubs are not run again).",
        ),
    ] = False,
    charts_dir: Annotated[
        Path | None,
        typer.Option(
            "--charts-dir",
            help="Directory of jupyterhub-<version>.tgz charts (default: fleet.yaml kubernetes.charts_dir).",
            show_default=False,
        ),
    ] = None,
    kube_version: Annotated[
        str | None,
        typer.Option(
            "--kube-version",
            help="Kubernetes version helm renders the chart for, such as 1.33.0 (default: helm's own; older "
            "helm 3 releases default to a version below what chart 4.x requires).",
            show_default=False,
        ),
    ] = None,
    state_dir: StateDirOption = None,
) -> None:
    """Check every fleet file and cross-file rule; print each error as file:line:col: message."""
    root = _fleet_dir(fleet)
    config, errors = validate_fleet(root, FleetCache.in_state(resolve_state_dir(root.resolve(), state_dir)))
    if errors or config is None:
        for error in errors:
            typer.echo(str(error))
        typer.echo(f"{len(errors)} error(s) in {root}", err=True)
        raise typer.Exit(1)
    typer.echo(summary(config))
    from hubfleet.config.rules_identity import username_merge_warnings

    for warning in username_merge_warnings(config):
        typer.echo(str(warning), err=True)
    for note in user_database_notes(config):
        typer.echo(note, err=True)
    for warning in cost_warnings(config):  # valid, but a currency has no exchange rate
        typer.echo(str(warning), err=True)
    for warning in support_warnings(config):  # valid, but the desk's mail cannot go out or be followed
        typer.echo(str(warning), err=True)
    for warning in token_key_warnings(config):  # valid, but CI runners would make new hub tokens
        typer.echo(str(warning), err=True)
    if chart:
        check_charts(config, charts_dir, resolve_state_dir(root.resolve(), state_dir), kube_version)


def check_charts(
    config: FleetConfig, charts_dir: Path | None, state_dir: Path, kube_version: str | None = None
) -> None:
    """`validate --chart`: one line per Kubernetes hub (OK, failed with the errors, or not checked and why);
    exit 1 when a hub failed or no helm or charts directory is there to check with."""
    from hubfleet.render.chart_check import (
        INSTALL_HINT,
        ChartCheckError,
        check_fleet_charts,
        helm_binary,
        helm_version_label,
        kubernetes_hubs,
    )

    if not kubernetes_hubs(config):
        typer.echo("chart check: no Kubernetes hubs in this fleet")
        return
    setting = config.settings.kubernetes.charts_dir
    directory = charts_dir if charts_dir is not None else (config.file(setting) if setting else None)
    if directory is None:
        raise UserError(
            "--chart needs the charts: set `kubernetes: {charts_dir: DIR}` in fleet.yaml or pass "
            "--charts-dir DIR (a directory of jupyterhub-<version>.tgz, e.g. from `helm pull jupyterhub "
            "--repo https://hub.jupyter.org/helm-chart/ --version VERSION`)"
        )
    if not directory.is_dir():
        raise UserError(
            f"charts directory {directory} not found (--charts-dir or fleet.yaml kubernetes.charts_dir)"
        )
    try:
        helm = helm_binary()
        if helm is None:
            raise UserError(f"--chart: {INSTALL_HINT}")
        checks = check_fleet_charts(
            config, charts_dir=directory, state_dir=state_dir, helm=helm, kube_version=kube_version
        )
    except ChartCheckError as exc:
        raise UserError(f"--chart: {exc}") from None
    typer.echo(f"chart check ({helm_version_label(state_dir) or 'helm'}, charts from {directory}):")
    for check in checks:
        if check.status == "failed":
            typer.echo(f"  {check.hub}: FAILED")
            for error in check.errors:
                typer.echo(str(error))
        else:
            label = "OK" if check.status == "ok" else "not checked"
            typer.echo(f"  {check.hub}: {label}: {check.detail}")
    failed = [c.hub for c in checks if c.status == "failed"]
    if failed:
        typer.echo(f"{len(failed)} hub(s) failed the chart check: {', '.join(failed)}", err=True)
        raise typer.Exit(1)


def user_database_notes(config: FleetConfig) -> list[str]:
    """Local hubs whose per-user databases cannot run here: they need root (per-user accounts)."""
    from hubfleet.backends.local import isolation_mode

    if isolation_mode() != "single":
        return []
    return [
        f"note: hub {hub.name} has `user_database`, which needs hubfleet running as root (each user's "
        "PostgreSQL server runs as their own OS account); `hubfleet up` without root refuses to start it"
        for hub in config.local_hubs()
        if hub.user_database is not None
    ]


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

"""`hubfleet secrets set / show / keygen / rekey`: thin wrappers over hubfleet.secrets.store.

Values are read from stdin or a hidden prompt, never from the command line (shell history, `ps`), and are
printed only by `show --reveal`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hubfleet.cli.app import app
from hubfleet.cli.common import FleetOption, friendly_errors
from hubfleet.settings import UserError, resolve_fleet_dir

secrets_app = typer.Typer(
    name="secrets",
    help="Hub and fleet-level secrets, encrypted with age to the operators' keys in fleet.yaml.",
    no_args_is_help=True,
)
app.add_typer(secrets_app)

IdentityOption = Annotated[
    Path | None,
    typer.Option(
        "--identity",
        help="age identity file (default: $HUBFLEET_AGE_IDENTITY, else ~/.config/hubfleet/age-identity.txt).",
        show_default=False,
    ),
]
HubArgument = Annotated[str, typer.Argument(help="Hub name.")]
FleetLevelOption = Annotated[
    bool,
    typer.Option(
        "--fleet-level",
        help="Fleet-level secrets in secrets/fleet.yaml (alert channels in fleet.yaml), not a hub's.",
    ),
]


def _read_value(hub: str | None, key: str) -> str:
    if not sys.stdin.isatty():
        value = sys.stdin.read()
        # `echo value | hubfleet secrets set ...` adds one newline that is not part of the secret.
        return value[:-2] if value.endswith("\r\n") else value.removesuffix("\n")
    try:
        return typer.prompt(
            f"value of secret '{key}' for hub '{hub}'" if hub else f"value of fleet-level secret '{key}'",
            hide_input=True,
            confirmation_prompt=True,
        )
    except typer.Abort:
        raise UserError("no value given; nothing was written") from None


@secrets_app.command("set")
@friendly_errors
def set_(
    hub: Annotated[str, typer.Argument(help="Hub name (with --fleet-level: the KEY).")],
    key: Annotated[
        str | None, typer.Argument(help="Secret key: lower-case letters, digits and '_'.", show_default=False)
    ] = None,
    fleet: FleetOption = None,
    fleet_level: FleetLevelOption = False,
) -> None:
    """Encrypt a value (read from stdin, or prompted for twice) as KEY of HUB's secrets file;
    `set --fleet-level KEY`: as KEY of the fleet-level secrets/fleet.yaml (alert channels, certificates)."""
    from hubfleet.secrets.store import set_fleet_secret, set_secret

    fleet_dir = resolve_fleet_dir(fleet)
    if fleet_level:
        if key is not None:
            raise UserError(
                "with --fleet-level give only the KEY: `hubfleet secrets set --fleet-level KEY` "
                "(fleet-level secrets belong to no hub)"
            )
        value = _read_value(None, hub)
        path = set_fleet_secret(fleet_dir, hub, value)
        typer.echo(
            f"set fleet-level secret '{hub}' in {path.relative_to(fleet_dir)}; "
            f"use it in fleet.yaml (`monitoring.alerts`, `console.oidc`, `front_door.certificates`) as "
            f"{{secret: {hub}}}"
        )
        return
    if key is None:
        raise UserError("missing KEY: `hubfleet secrets set HUB KEY` (or `set --fleet-level KEY`)")
    value = _read_value(hub, key)
    path = set_secret(fleet_dir, hub, key, value)
    typer.echo(
        f"set secret '{key}' of hub '{hub}' in {path.relative_to(fleet_dir)}; "
        f"use it in the hub file as {{secret: {key}}}"
    )


@secrets_app.command()
@friendly_errors
def show(
    hub: Annotated[str | None, typer.Argument(help="Hub name (none with --fleet-level).")] = None,
    fleet: FleetOption = None,
    reveal: Annotated[bool, typer.Option("--reveal", help="Print the decrypted values.")] = False,
    identity: IdentityOption = None,
    fleet_level: FleetLevelOption = False,
) -> None:
    """List HUB's secret keys (or with --fleet-level those of secrets/fleet.yaml), values as *** unless
    --reveal, and the settings that use them."""
    from hubfleet.secrets.store import fleet_secret_keys, hub_secret_keys, reveal_fleet
    from hubfleet.secrets.store import reveal as reveal_values

    fleet_dir = resolve_fleet_dir(fleet)
    if fleet_level == (hub is not None):
        raise UserError("give a HUB or --fleet-level: `hubfleet secrets show HUB` / `show --fleet-level`")
    if hub is None:
        keys = fleet_secret_keys(fleet_dir)
        if not keys:
            typer.echo("the fleet has no fleet-level secrets")
            return
        values = reveal_fleet(fleet_dir, identity) if reveal else {}
    else:
        keys = hub_secret_keys(fleet_dir, hub)
        if not keys:
            typer.echo(f"hub '{hub}' has no secrets")
            return
        values = reveal_values(fleet_dir, hub, identity) if reveal else {}
    for key, is_set, used_by in keys:
        shown = values.get(key, "***") if is_set else "(not set)"
        where = f"  # {', '.join(used_by)}" if used_by else "  # unused"
        # typer.echo, not rich: a value may contain [markup].
        typer.echo(f"{key}: {shown}{where}")


@secrets_app.command()
@friendly_errors
def keygen(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where to write the identity (default: $HUBFLEET_AGE_IDENTITY, "
            "else ~/.config/hubfleet/age-identity.txt).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create your age identity (mode 0600) and print the public key to put in fleet.yaml."""
    from hubfleet.secrets.store import keygen as make_identity

    path, recipient = make_identity(out)
    typer.echo(f"wrote age identity {path} (keep it private; back it up)", err=True)
    typer.echo(
        "add its public key to your operator entry in fleet.yaml (below). The fleet's first operator is then "
        "done: `hubfleet secrets set` encrypts to every age_recipient. Where the fleet already has secrets, "
        "someone who can decrypt them runs `hubfleet secrets rekey` so that you can too:",
        err=True,
    )
    typer.echo(f"  age_recipient: {recipient}", err=True)
    typer.echo(recipient)


@secrets_app.command()
@friendly_errors
def rekey(fleet: FleetOption = None, identity: IdentityOption = None) -> None:
    """Re-encrypt every secret to the current recipients (after adding or removing an operator or CI key)."""
    from hubfleet.secrets.store import rekey as rekey_all

    fleet_dir = resolve_fleet_dir(fleet)
    done = rekey_all(fleet_dir, identity)
    for path, count in done:
        typer.echo(f"re-encrypted {count} secret(s) in {path.relative_to(fleet_dir)}")
    typer.echo(f"rekeyed {len(done)} file(s); commit them")

"""`hubfleet retire HUB`: stop a hub for good and hand its users' files to its community."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hubfleet.cli.app import app
from hubfleet.cli.common import FleetOption, StateDirOption, console, friendly_errors, load_or_explain
from hubfleet.cli.daemon_ops import control, daemon_runs
from hubfleet.config.models import Hub
from hubfleet.settings import UserError, resolve_fleet_dir, resolve_state_dir

if TYPE_CHECKING:  # imported by the command itself: every `hubfleet` command would pay for the store
    from hubfleet.backup.retire import RemovedHub
    from hubfleet.store import Store


@app.command()
@friendly_errors
def retire(
    hub: Annotated[str, typer.Argument(help="The hub.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    purge_now: Annotated[
        bool,
        typer.Option(
            "--purge-now",
            help="Purge a retired hub's data, snapshots and archives now, before its retention.",
        ),
    ] = False,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Retire a hub: stop it for good, take a final backup, write one archive per user and a manifest for
    the community's contacts; its data is kept for `backups.retired_retention_days`, then purged."""
    from hubfleet.backup.dumps import HUB_DATABASE, copy_sqlite
    from hubfleet.backup.retire import purge_retired, refuse_if_retired, retire_hub, retired_dir
    from hubfleet.deploy.export import HubData, export_hub
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    state = resolve_state_dir(fleet_dir, state_dir)
    with open_store(state) as store:
        if purge_now:
            _confirm(
                yes,
                f"Purge retired hub {hub} now: its data, homes, snapshots and archives, for good?",
                "--purge-now",
            )
            done = purge_retired(config, state, store, hub)
            console.print(f"{hub}: purged {', '.join(done)}", highlight=False)
            return
        the_hub = config.hubs.get(hub) or _removed_hub(store, hub)
        if isinstance(the_hub, Hub) and config.cluster_of(the_hub).kind != "local":
            raise UserError(
                f"hub {hub} runs on Kubernetes: retire it there (its homes are on the cluster's volumes; see "
                "docs/backups.md for the snapshot route); `hubfleet export` writes its bundle"
            )
        refuse_if_retired(store, hub)
        _confirm(
            yes,
            f"Retire hub {hub} of community {the_hub.community}: stop it for good (its users' servers too) "
            "and archive its users' files?",
            "",
        )
        held = daemon_runs(state, hub)

        def hold() -> None:
            if held:
                control(state, {"op": "hold", "hub": hub, "reason": "being retired"})
                console.print(f"{hub}: stopped (with its users' servers)", highlight=False)

        def bundle(dest: Path) -> None:
            assert isinstance(the_hub, Hub)
            database = retired_dir(state, hub) / "database" / HUB_DATABASE
            data = HubData(database, None, copy_sqlite) if database.exists() else None
            export_hub(config, the_hub, dest, data=data)

        try:
            retired = retire_hub(
                config, state, store, the_hub, hold=hold, bundle=bundle if isinstance(the_hub, Hub) else None
            )
        except BaseException:
            if held:  # nothing was recorded: the hub runs again as before
                control(state, {"op": "release", "hub": hub})
            raise
        if held:  # marked retired in the daemon, which never starts it again
            control(state, {"op": "hold", "hub": hub, "reason": "retired"})
    record = retired.record
    console.print(f"{hub}: {retired.backup}", highlight=False)
    for archive in retired.archives:
        if archive.archive is None:
            continue
        console.print(
            f"{hub}: {archive.username}: {archive.files} files, {archive.bytes} bytes in {archive.archive}",
            highlight=False,
        )
    console.print(
        f"{hub}: retired; archives and a manifest for the community's contacts in {record.archive_dir} "
        f"(README.md, manifest.json); its data is kept until {record.purge_after:%Y-%m-%d} and purged after."
        + (" Remove its hub file from the fleet." if hub in config.hubs else ""),
        highlight=False,
    )


def _removed_hub(store: Store, name: str) -> RemovedHub:
    """A hub whose file is gone, as its last deployment knew it; UserError when the fleet never ran it."""
    from hubfleet.backup.retire import RemovedHub

    last = store.last_deployment(name)
    if last is None:
        raise UserError(f"no hub named {name!r} in the fleet's files or its deployments; check the name")
    kind = str(((last.settings or {}).get("cluster") or {}).get("kind", "local"))
    if kind != "local":
        raise UserError(
            f"hub {name} ran on Kubernetes: its homes are on the cluster's volumes; retire it there"
        )
    return RemovedHub(
        name=name,
        community=last.community or "",
        display_name=last.settings and str((last.settings.get("hub") or {}).get("display_name", "")) or "",
    )


def _confirm(yes: bool, question: str, flag: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UserError(
            f"not asking without a terminal: pass --yes{' with ' + flag if flag else ''} to go ahead"
        )
    if not typer.confirm(question, default=False):
        raise UserError("nothing done")

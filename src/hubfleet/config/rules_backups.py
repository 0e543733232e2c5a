"""Cross-file rules on backups: a repository that cannot hold the fleet's backups safely, and hub settings
that ask for backups the fleet does not take. (`{secret: KEY}` values in `backups` are checked with the other
fleet-level secrets, in `rules_secrets`.)"""

from __future__ import annotations

from pathlib import Path

from hubfleet.config.fleet import ConfigError
from hubfleet.config.loader import SourcedFleetConfig

STATE_TREES = (".hubfleet", ".hubfleet-data")
"""The default state and data directories in a fleet directory: what a backup reads and `down --purge`
deletes."""


def repository_outside_the_data(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """A directory repository inside the state or data tree would be backed up into itself and lost with
    what it is meant to save."""
    if fleet.settings is None or fleet.settings.backups is None or fleet.fleet_source is None:
        return []
    location = fleet.settings.backups.repository
    if location.startswith("s3:"):
        return []
    root = fleet.root.resolve()
    path = (Path(location) if Path(location).is_absolute() else root / location).resolve()
    for tree in STATE_TREES:
        if path == root / tree or (root / tree) in path.parents:
            return [
                fleet.fleet_error(
                    "backups.repository",
                    f"backups.repository: {location} is inside {tree}, which holds what is backed up; "
                    "put the repository elsewhere (another disk, or s3:https://HOST/BUCKET)",
                )
            ]
    return []


def hub_backup_needs_fleet_backups(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """A hub file that tunes its backups on a fleet without `backups` would silently get none."""
    if fleet.settings is None or fleet.settings.backups is not None:
        return []
    errors = []
    for entry in fleet.hub_entries:
        backup = entry.hub.backup
        if backup.every_hours is not None or backup.keep is not None:
            errors.append(
                fleet.hub_error(
                    entry,
                    "backup",
                    "backup: this hub sets a backup schedule or retention but fleet.yaml has no `backups` "
                    "block; add one (repository and password) or remove these settings",
                )
            )
    return errors

# ruff: noqa: E501 - the expected error lines are kept whole, as the user sees them
"""fleet.yaml `backups`, a hub's `backup` and `home_quota` in validation: each bad input through the real loader
and rules on a real fleet directory, with the message the operator reads; and the effective policy per hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_helpers import edit, hubfleet
from hubfleet.config.models_backup import size_bytes
from hubfleet.config.validate import load_fleet
from hubfleet.secrets.store import set_fleet_secret
from test_front_door_config import PROD, STAGING, errors, make_fleet

BACKUPS = """backups:
  repository: /srv/backups/uni
  password: {secret: backup_password}
"""


def fleet_with(tmp_path: Path, backups: str) -> Path:
    """The two-hub fleet without a front door, the fleet-level secret backup_password set, then `backups`."""
    root = make_fleet(tmp_path, "", prod_domain=None)
    set_fleet_secret(root, "backup_password", "a-long-backup-password")
    with (root / "fleet.yaml").open("a") as f:
        f.write(backups)
    return root


def test_policy_per_hub_overrides_the_fleet(tmp_path: Path) -> None:
    root = fleet_with(tmp_path, BACKUPS + "  every_hours: 12\n  keep:\n    daily: 3\n")
    edit(root / PROD, "port: 18102\n", "port: 18102\nbackup:\n  every_hours: 2\n  keep:\n    monthly: 24\n")
    edit(root / STAGING, "port: 18101\n", "port: 18101\nbackup:\n  enabled: false\n")
    assert errors(root) == []
    fleet = load_fleet(root)
    prod = fleet.backup_policy(fleet.hubs["uni"])
    assert prod is not None
    assert (prod.every_hours, prod.late_after_hours) == (2, 4)  # late: twice the hub's own schedule
    assert (prod.keep.daily, prod.keep.weekly, prod.keep.monthly) == (7, 4, 24)  # the hub's keep, whole
    assert fleet.backup_policy(fleet.hubs["uni-staging"]) is None


def test_defaults_set_a_hub_backup_field_by_field(tmp_path: Path) -> None:
    root = fleet_with(tmp_path, BACKUPS + "defaults:\n  backup:\n    every_hours: 4\n")
    edit(root / PROD, "port: 18102\n", "port: 18102\nbackup:\n  keep:\n    daily: 1\n")
    fleet = load_fleet(root)
    prod = fleet.backup_policy(fleet.hubs["uni"])
    assert prod is not None and prod.every_hours == 4 and prod.keep.daily == 1


@pytest.mark.parametrize(
    ("backups", "message"),
    [
        (
            "backups:\n  repository: s3:https://s3.example.org/bucket\n  password: {secret: backup_password}\n",
            "an s3: repository needs `s3: {access_key_id: ..., secret_access_key: ...}`",
        ),
        (
            "backups:\n  repository: sftp:backup@host:/srv\n  password: {secret: backup_password}\n",
            "'sftp:backup@host:/srv': only a directory or s3:https://HOST/BUCKET repositories are supported",
        ),
        (
            "backups:\n  repository: s3:https://user:key@s3.example.org/bucket\n  password: {secret: backup_password}\n"
            "  s3:\n    access_key_id: {secret: a}\n    secret_access_key: {secret: b}\n",
            "is not an S3 repository; write s3:https://HOST/BUCKET[/PREFIX]",
        ),
        (
            BACKUPS + "  keep:\n    daily: 0\n    weekly: 0\n    monthly: 0\n",
            "keeps no snapshot at all; set daily, weekly or monthly above 0",
        ),
        (
            BACKUPS + "  s3:\n    access_key_id: {secret: a}\n    secret_access_key: {secret: b}\n",
            "`s3` credentials are set but the repository is a directory; remove them",
        ),
        (
            "backups:\n  repository: /srv/b\n  password: {secret: backup_password}\n  s3:\n"
            "    access_key_id: AKIA123\n    secret_access_key: {secret: b}\n",
            "backups.s3.access_key_id: must be a secret reference such as {secret: KEY}, never the value itself; write `access_key_id: {secret: access_key_id}`, store the value with `hubfleet secrets set --fleet-level access_key_id`",
        ),
        (
            "backups:\n  repository: .hubfleet-data/backups\n  password: {secret: backup_password}\n",
            "backups.repository: .hubfleet-data/backups is inside .hubfleet-data, which holds what is backed up; put the repository elsewhere",
        ),
        (
            "backups:\n  repository: /srv/b\n  password: {secret: other_password}\n",
            "backups.password: fleet-level secret 'other_password' is not set in secrets/fleet.yaml; run `hubfleet secrets set --fleet-level other_password`",
        ),
    ],
)
def test_bad_backups_settings_are_named(tmp_path: Path, backups: str, message: str) -> None:
    root = fleet_with(tmp_path, backups)
    found = errors(root)
    assert any(message in line and "fleet.yaml:" in line for line in found), found


def test_hub_backup_settings_without_fleet_backups(tmp_path: Path) -> None:
    root = make_fleet(tmp_path, "", prod_domain=None)
    edit(root / PROD, "port: 18102\n", "port: 18102\nbackup:\n  every_hours: 2\n")
    found = errors(root)
    assert any(
        "prod.yaml:6:1: backup: this hub sets a backup schedule or retention but fleet.yaml has no `backups` block"
        in line
        for line in found
    ), found


def test_home_quota(tmp_path: Path) -> None:
    root = make_fleet(tmp_path, "", prod_domain=None)
    edit(root / PROD, "port: 18102\n", "port: 18102\nhome_quota:\n  limit: 10Gi\n")
    assert any(
        "'10Gi' is not a size; write a number with K, M, G or T, such as 10G" in e for e in errors(root)
    )
    edit(root / PROD, "limit: 10Gi\n", "limit: 1.5G\n  warn_at: [95, 80, 120]\n")
    assert any("warn_at takes percentages between 1 and 100" in e for e in errors(root))
    edit(root / PROD, "  warn_at: [95, 80, 120]\n", "  warn_at: [95, 80]\n")
    assert errors(root) == []
    quota = load_fleet(root).hubs["uni"].home_quota
    assert quota is not None and quota.warn_at == [80, 95] and quota.limit_bytes == int(1.5 * 1024**3)
    assert size_bytes("512M") == 512 * 1024**2


def test_commands_refuse_kubernetes_hubs_and_print_names_as_they_are() -> None:
    """A Kubernetes hub's homes are the cloud's volumes; a name with markup characters is printed as is."""
    fixture = Path(__file__).resolve().parent / "fixtures" / "k8s-fleet"
    for command in (["backup", "physics-staging"], ["restore", "physics-staging", "--database"]):
        result = hubfleet(*command, fleet=fixture)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "hub physics-staging runs on kubernetes cluster" in result.stderr
        assert (
            "back them up with the provider's snapshots (docs/backups.md, 'Kubernetes hubs')" in result.stderr
        )
    odd = hubfleet("backups", "list", "x[/b]", fleet=fixture)
    assert odd.returncode == 1 and "error: no hub named 'x[/b]'" in odd.stderr, odd.stderr

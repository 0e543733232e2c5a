"""fleet.yaml `backups`, a hub's `backup` overrides and `home_quota`: what keeps users' files safe.

Backups are restic snapshots (encrypted, incremental, deduplicated) in one repository per fleet: a local
directory or S3-compatible storage. Each hub's snapshot holds its users' homes and a consistent copy of its
database; the daemon takes them on a schedule and `hubfleet backup` on demand.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from hubfleet.config.fields import Strict
from hubfleet.config.secret_refs import FleetSecretOnly, SecretOrPlain

SIZE_PATTERN = re.compile(r"^(\d+(?:\.\d+)?)([KMGT])$")
_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def size_bytes(text: str) -> int:
    """Bytes of a size such as 500M or 2G (binary units, as `du -h` prints them)."""
    match = SIZE_PATTERN.match(text)
    if not match:
        raise ValueError(f"'{text}' is not a size; write a number with K, M, G or T, such as 10G")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


class Keep(Strict):
    """How many snapshots of each hub `restic forget` keeps: the newest of each day, week and month (and,
    whatever these say, every snapshot of the last 24 hours and the newest one)."""

    daily: int = Field(default=7, ge=0, le=3660, description="Newest snapshot of each of the last N days.")
    weekly: int = Field(default=4, ge=0, le=520, description="Newest snapshot of each of the last N weeks.")
    monthly: int = Field(default=6, ge=0, le=240, description="Newest snapshot of each of the last N months.")

    @model_validator(mode="after")
    def _keeps_something(self) -> Keep:
        if self.daily == self.weekly == self.monthly == 0:
            raise ValueError("keeps no snapshot at all; set daily, weekly or monthly above 0")
        return self


class S3Credentials(Strict):
    """Access to an S3-compatible bucket (AWS S3, MinIO, Ceph, a cloud's S3 interface)."""

    access_key_id: FleetSecretOnly = Field(
        description="{secret: KEY}: a fleet-level secret with the access key id."
    )
    secret_access_key: FleetSecretOnly = Field(
        description="{secret: KEY}: a fleet-level secret with the secret key."
    )
    region: str = Field(default="", description="The bucket's region, where the service needs one.")


class Backups(Strict):
    """fleet.yaml `backups`: where snapshots go, their password, schedule and retention."""

    repository: str = Field(
        min_length=1,
        description="A directory (relative to the fleet directory, or absolute) or S3-compatible storage as "
        "s3:https://HOST/BUCKET[/PREFIX]. Keep it on another disk or machine than the hubs' data.",
        examples=["/srv/backups/hubfleet", "s3:https://s3.eu-west-1.amazonaws.com/my-fleet-backups"],
    )
    password: SecretOrPlain = Field(
        description="The repository's encryption password: {secret: KEY} naming a fleet-level secret (set "
        "it with `hubfleet secrets set --fleet-level KEY`). Without it the backups cannot be read: keep a "
        "copy outside the fleet."
    )
    s3: S3Credentials | None = Field(default=None, description="Credentials for an s3: repository.")
    every_hours: float = Field(
        default=24, ge=0.01, le=24 * 31, description="Hours between two backups of each hub."
    )
    late_after_hours: float | None = Field(
        default=None,
        gt=0,
        description="A hub whose last good backup is older than this has a 'backup late' incident "
        "(unset: twice every_hours).",
    )
    keep: Keep = Field(default_factory=Keep)
    retired_retention_days: int = Field(
        default=90,
        ge=0,
        le=3650,
        description="Days a retired hub's data, archives and snapshots are kept before they are purged.",
    )

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        if value.startswith("s3:") and not re.match(r"^s3:https?://[^/\s@]+/[^/\s]+(/\S*)?$", value):
            raise ValueError(f"'{value}' is not an S3 repository; write s3:https://HOST/BUCKET[/PREFIX]")
        if re.match(r"^[a-z0-9]+:", value) and not value.startswith("s3:"):
            raise ValueError(
                f"'{value}': only a directory or s3:https://HOST/BUCKET repositories are supported"
            )
        return value

    @model_validator(mode="after")
    def _credentials(self) -> Backups:
        if self.repository.startswith("s3:") and self.s3 is None:
            raise ValueError("an s3: repository needs `s3: {access_key_id: ..., secret_access_key: ...}`")
        if self.s3 is not None and not self.repository.startswith("s3:"):
            raise ValueError("`s3` credentials are set but the repository is a directory; remove them")
        return self


class HubBackup(Strict):
    """A hub's own backup settings (each unset value: the fleet's `backups`)."""

    enabled: bool = Field(
        default=True, description="false: this hub is never backed up (say why in a comment)."
    )
    every_hours: float | None = Field(default=None, ge=0.01, le=24 * 31, description="Hours between backups.")
    keep: Keep | None = Field(
        default=None, description="Replaces the fleet's `keep` whole (numbers it leaves out: their defaults)."
    )


class HomeQuota(Strict):
    """How much each user's home may hold. Warned about at thresholds on every filesystem; enforced by the
    filesystem where it has project quotas (XFS with prjquota; see the operator guide)."""

    limit: str = Field(description="Size such as 10G (binary units).", examples=["10G"])
    warn_at: list[int] = Field(
        default=[80, 95],
        description="Percentages of the limit at which the user and the operators are warned.",
    )

    @field_validator("limit")
    @classmethod
    def _size(cls, value: str) -> str:
        size_bytes(value)
        return value

    @field_validator("warn_at")
    @classmethod
    def _percentages(cls, value: list[int]) -> list[int]:
        if any(not 1 <= p <= 100 for p in value):
            raise ValueError("warn_at takes percentages between 1 and 100, such as [80, 95]")
        return sorted(set(value))

    @property
    def limit_bytes(self) -> int:
        return size_bytes(self.limit)


class BackupPolicy(Strict):
    """A hub's effective schedule and retention: its own `backup` over the fleet's `backups`."""

    every_hours: float
    late_after_hours: float
    keep: Keep


def backup_policy(fleet: Backups | None, hub: HubBackup) -> BackupPolicy | None:
    """None when the fleet has no backups or the hub turns them off."""
    if fleet is None or not hub.enabled:
        return None
    every = hub.every_hours if hub.every_hours is not None else fleet.every_hours
    late = fleet.late_after_hours if fleet.late_after_hours is not None else 2 * every
    return BackupPolicy(every_hours=every, late_after_hours=max(late, every), keep=hub.keep or fleet.keep)

"""The secrets commands as functions (set, show, rekey, keygen) and `SecretResolver`, which decrypts for
render/deploy.

The files' format (KEY -> ASCII-armored age ciphertext, read by validation without any key) is
`hubfleet.config.secrets_file`; this module decides what goes in them: every value encrypted to every
operator's `age_recipient` and every fleet.yaml `ci_recipients` entry. Values are decrypted only in memory,
lazily, with the operator's identity (see `hubfleet.secrets.age.identity_path`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyrage
from pydantic import SecretStr

from hubfleet.config.fields import pattern_hint
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.loader import SourcedFleetConfig, load_fleet_files
from hubfleet.config.models import FleetSettings, Hub
from hubfleet.config.rules_secrets import fleet_level_refs
from hubfleet.config.secret_refs import SecretKey, SecretRef, is_secret_key, secret_refs
from hubfleet.config.secrets_file import (
    FLEET_SECRETS_FILE,
    SECRETS_DIR,
    fleet_secrets_file,
    hub_secrets_file,
    write_secrets_file,
)
from hubfleet.secrets import age
from hubfleet.settings import UserError

# --------------------------------------------------------------------------- files


def fleet_recipients(fleet: FleetSettings) -> list[str]:
    """Who every secret is encrypted to: each operator's age_recipient, then fleet.yaml ci_recipients."""
    found: list[str] = []
    for recipient in [op.age_recipient for op in fleet.operators] + list(fleet.ci_recipients):
        if recipient and recipient not in found:
            found.append(recipient)
    return found


def _loaded(fleet_root: Path | str) -> SourcedFleetConfig:
    """The fleet as far as it loads: secrets commands must work while validation still reports
    `secret 'KEY' is not set` (that is how a new secret gets set)."""
    root = Path(fleet_root)
    config, errors = load_fleet_files(root)
    if config is None or config.settings is None:
        first = next((str(e) for e in sorted(errors) if e.file.startswith("fleet.yaml")), None)
        where = f" ({first})" if first else ""
        raise UserError(f"cannot read the fleet in {root}{where}; run `hubfleet validate`")
    secret_errors = [e for e in errors if f"/{SECRETS_DIR}/" in e.file or e.file == FLEET_SECRETS_FILE]
    if secret_errors:
        raise UserError(f"{secret_errors[0]}; fix the secrets file first (hubfleet validate)")
    return config


def _hub_dir(config: SourcedFleetConfig, hub_name: str) -> str:
    """The community directory holding the hub's file."""
    config.require_hub(hub_name)
    return next(e.directory for e in config.hub_entries if e.hub.name == hub_name)


def _check_key(key: str) -> None:
    if not is_secret_key(key):
        raise UserError(f"'{key[:60]}' {pattern_hint(SecretKey)}")


def _require_recipients(fleet: FleetSettings) -> list[str]:
    recipients = fleet_recipients(fleet)
    if not any(op.age_recipient for op in fleet.operators):
        raise UserError(
            "no operator in fleet.yaml has an age_recipient; run `hubfleet secrets keygen` and add "
            "`age_recipient: age1...` to your operator entry"
        )
    return recipients


# --------------------------------------------------------------------------- commands as functions


def set_secret(
    fleet_root: Path | str, hub_name: str, key: str, value: str, recipients: list[str] | None = None
) -> Path:
    """Encrypt `value` to `recipients` (default: the fleet's current ones) as KEY of the hub's secrets file.
    Other keys are kept as they are; the file is replaced atomically. Returns the file's path."""
    _check_key(key)
    if not isinstance(value, str) or value == "":
        raise UserError(f"secret '{key}' of hub '{hub_name}': the value is empty; nothing was written")
    config = _loaded(fleet_root)
    community = _hub_dir(config, hub_name)
    if recipients is None:
        recipients = _require_recipients(config.settings)
    path = hub_secrets_file(config.root, community, hub_name)
    values = dict(_entry_values(config, community, hub_name))
    values[key] = age.encrypt(value, recipients)
    write_secrets_file(path, hub_name, values)
    return path


def set_fleet_secret(
    fleet_root: Path | str, key: str, value: str, recipients: list[str] | None = None
) -> Path:
    """Encrypt `value` as KEY of the fleet-level secrets file secrets/fleet.yaml (used by fleet.yaml
    `monitoring.alerts` as {secret: KEY}); other keys are kept; returns the file's path."""
    _check_key(key)
    if not isinstance(value, str) or value == "":
        raise UserError(f"fleet-level secret '{key}': the value is empty; nothing was written")
    config = _loaded(fleet_root)
    if recipients is None:
        recipients = _require_recipients(config.settings)
    values = dict(config.fleet_secrets)
    values[key] = age.encrypt(value, recipients)
    path = fleet_secrets_file(config.root)
    write_secrets_file(path, None, values)
    return path


def fleet_secret_keys(fleet_root: Path | str) -> list[tuple[str, bool, list[str]]]:
    """(key, is set, the fleet.yaml settings that reference it) for every fleet-level secret."""
    config = _loaded(fleet_root)
    used: dict[str, list[str]] = {}
    for path, ref in fleet_level_refs(config.settings):
        used.setdefault(ref.secret, []).append(path)
    stored = config.fleet_secrets
    return [(key, key in stored, used.get(key, [])) for key in sorted(set(stored) | set(used))]


def reveal_fleet(fleet_root: Path | str, identity_path: Path | str | None = None) -> dict[str, str]:
    """Every fleet-level secret, decrypted (for `hubfleet secrets show --fleet-level --reveal`)."""
    config = _loaded(fleet_root)
    stored = config.fleet_secrets
    identity = age.load_identity(identity_path) if stored else None
    return {key: _decrypt(identity, None, key, stored[key]) for key in sorted(stored)}  # type: ignore[arg-type]


def _entry_values(config: SourcedFleetConfig, community: str, hub_name: str) -> dict[str, str]:
    entry = next(
        (e for e in config.secret_entries if e.hub_name == hub_name and e.directory == community), None
    )
    return entry.values if entry is not None else {}


def hub_secret_keys(fleet_root: Path | str, hub_name: str) -> list[tuple[str, bool, list[str]]]:
    """(key, is set, the settings that reference it) for every key of the hub's file or its settings."""
    config = _loaded(fleet_root)
    community = _hub_dir(config, hub_name)
    stored = _entry_values(config, community, hub_name)
    entry = next(e for e in config.hub_entries if e.hub.name == hub_name)
    used: dict[str, list[str]] = {}
    for path, ref in secret_refs(entry.hub):
        used.setdefault(ref.secret, []).append(path)
    return [(key, key in stored, used.get(key, [])) for key in sorted(set(stored) | set(used))]


def reveal(fleet_root: Path | str, hub_name: str, identity_path: Path | str | None = None) -> dict[str, str]:
    """Every value of the hub's secrets file, decrypted (for `hubfleet secrets show --reveal`)."""
    config = _loaded(fleet_root)
    community = _hub_dir(config, hub_name)
    stored = _entry_values(config, community, hub_name)
    identity = age.load_identity(identity_path) if stored else None
    return {key: _decrypt(identity, hub_name, key, stored[key]) for key in sorted(stored)}  # type: ignore[arg-type]


def rekey(fleet_root: Path | str, identity: Path | str | None = None) -> list[tuple[Path, int]]:
    """Re-encrypt every secret of the fleet to its current recipients (after an operator or CI key was added
    or removed). Everything is decrypted first, so a key you cannot read changes no file.
    Returns (file, number of keys) for each file rewritten."""
    config = _loaded(fleet_root)
    recipients = _require_recipients(config.settings)
    entries = [e for e in config.secret_entries if e.values]
    loaded = age.load_identity(identity) if entries or config.fleet_secrets else None
    plain = [
        (e, {k: _decrypt(loaded, e.hub_name, k, v) for k, v in e.values.items()})  # type: ignore[arg-type]
        for e in entries
    ]
    fleet_level = (
        {k: _decrypt(loaded, None, k, v) for k, v in config.fleet_secrets.items()}  # type: ignore[arg-type]
        if config.fleet_secrets
        else {}
    )
    done = []
    for entry, values in plain:
        path = hub_secrets_file(config.root, entry.directory, entry.hub_name)
        encrypted = {k: age.encrypt(v, recipients) for k, v in values.items()}
        write_secrets_file(path, entry.hub_name, encrypted)
        done.append((path, len(values)))
    if fleet_level:
        path = fleet_secrets_file(config.root)
        encrypted = {k: age.encrypt(v, recipients) for k, v in fleet_level.items()}
        write_secrets_file(path, None, encrypted)
        done.append((path, len(fleet_level)))
    return done


def keygen(path: Path | str | None = None, *, force: bool = False) -> tuple[Path, str]:
    """Write a new age identity (mode 0600) to `path` (default: $HUBFLEET_AGE_IDENTITY, else
    ~/.config/hubfleet/age-identity.txt); return (path, its public recipient age1...)."""
    target = age.identity_path(path)
    if target.exists() and not force:
        raise UserError(
            f"{target} already exists and may hold your only copy of a key; "
            "use --out FILE to write a new identity elsewhere"
        )
    text, recipient = age.generate()
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_name(f".{target.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, target)
    return target, recipient


def _decrypt(identity: age.Identity, hub_name: str | None, key: str, armored: str) -> str:
    """hub_name None: a fleet-level secret (secrets/fleet.yaml)."""
    whose = f"of hub '{hub_name}'" if hub_name is not None else "(fleet-level, secrets/fleet.yaml)"
    set_cmd = (
        f"hubfleet secrets set {hub_name}" if hub_name is not None else "hubfleet secrets set --fleet-level"
    )
    try:
        return identity.decrypt(armored)
    except pyrage.DecryptError as exc:
        if "no matching keys" in str(exc).lower():
            raise UserError(
                f"cannot decrypt secret '{key}' {whose} with age identity {identity.path} "
                f"(public key {', '.join(identity.recipients)}): it was not encrypted to this key; "
                "ask an operator to add your age_recipient to fleet.yaml and run `hubfleet secrets rekey`, "
                "or point --identity / HUBFLEET_AGE_IDENTITY at the right identity"
            ) from None
        raise UserError(
            f"secret '{key}' {whose} is not valid age ciphertext; set it again with `{set_cmd} {key}`"
        ) from None


# --------------------------------------------------------------------------- render/deploy time


class SecretResolver:
    """Decrypts hub secrets in memory, only when asked, and caches them for the life of the object.

    The identity is read on the first decryption: `identity_path`, else $HUBFLEET_AGE_IDENTITY, else
    ~/.config/hubfleet/age-identity.txt. A fleet whose hubs use no `{secret: KEY}` never needs one.
    """

    def __init__(self, fleet: FleetConfig, identity_path: Path | str | None = None):
        self._fleet = fleet
        self._identity_flag = identity_path
        self._identity: age.Identity | None = None
        self._cache: dict[tuple[str, str], str] = {}

    @property
    def identity_path(self) -> Path:
        return age.identity_path(self._identity_flag)

    def value(self, hub_name: str, key: str) -> str:
        """The decrypted value of KEY for the hub; UserError when it is not set or cannot be decrypted."""
        cached = self._cache.get((hub_name, key))
        if cached is not None:
            return cached
        armored = self._fleet.secrets.get(hub_name, {}).get(key)
        if armored is None:
            raise UserError(
                f"secret '{key}' is not set for hub '{hub_name}'; run `hubfleet secrets set {hub_name} {key}`"
            )
        if self._identity is None:
            self._identity = age.load_identity(self._identity_flag)
        value = _decrypt(self._identity, hub_name, key, armored)
        self._cache[(hub_name, key)] = value
        return value

    def fleet_value(self, key: str) -> str:
        """The decrypted value of a fleet-level secret (secrets/fleet.yaml), as used by fleet.yaml
        `monitoring.alerts`; UserError when it is not set or cannot be decrypted."""
        cached = self._cache.get(("", key))
        if cached is not None:
            return cached
        armored = self._fleet.fleet_secrets.get(key)
        if armored is None:
            raise UserError(
                f"fleet-level secret '{key}' is not set; run `hubfleet secrets set --fleet-level {key}`"
            )
        if self._identity is None:
            self._identity = age.load_identity(self._identity_flag)
        value = _decrypt(self._identity, None, key, armored)
        self._cache[("", key)] = value
        return value

    def resolve_fleet(self, field_value: SecretStr | SecretRef | str | None) -> str | None:
        """The value of a secret-bearing fleet.yaml setting: plain text as is, `{secret: KEY}` decrypted
        from secrets/fleet.yaml, None as None."""
        if isinstance(field_value, SecretRef):
            return self.fleet_value(field_value.secret)
        return self.resolve("", field_value)

    def resolve(self, hub: Hub | str, field_value: SecretStr | SecretRef | str | None) -> str | None:
        """The value of a secret-bearing field: plain text as is, `{secret: KEY}` decrypted, None as None."""
        if field_value is None:
            return None
        if isinstance(field_value, SecretRef):
            return self.value(hub if isinstance(hub, str) else hub.name, field_value.secret)
        if isinstance(field_value, SecretStr):
            return field_value.get_secret_value()
        return str(field_value)

    def hashes(self, hub: Hub) -> dict[str, str]:
        """KEY -> sha256 (hex) of the value, for every secret the hub references: what a desired-state hash
        may include (a changed secret redeploys the hub; the value itself never leaves memory)."""
        out = {}
        for _, ref in secret_refs(hub):
            value = self.value(hub.name, ref.secret)
            out[ref.secret] = hashlib.sha256(f"{hub.name}\0{ref.secret}\0{value}".encode()).hexdigest()
        return out

    def verify(self, hubs: list[Hub]) -> None:
        """Decrypt every secret these hubs use, so that a missing identity fails before anything starts."""
        for hub in hubs:
            for _, ref in secret_refs(hub):
                self.value(hub.name, ref.secret)

    def __repr__(self) -> str:
        return (
            f"SecretResolver(fleet={self._fleet.settings.name!r}, identity={str(self.identity_path)!r}, "
            f"decrypted={len(self._cache)})"
        )

    __str__ = __repr__

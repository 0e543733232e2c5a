"""Cross-file rules on secrets, all checked without decrypting anything: every secrets file belongs to a
hub, every `{secret: KEY}` names a stored key, and someone can decrypt the secrets in use.

Each rule is a small function of the loaded fleet returning ConfigErrors; `config.rules` lists them all.
"""

from __future__ import annotations

from hubfleet.config.fleet import ConfigError
from hubfleet.config.loader import SourcedFleetConfig
from hubfleet.config.models import FleetSettings
from hubfleet.config.secret_refs import SecretRef, secret_refs
from hubfleet.suggest import did_you_mean


def secrets_files_match_hubs(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """communities/<c>/secrets/<hub>.yaml must belong to a hub of community <c>."""
    errors = []
    for entry in fleet.secret_entries:
        hub = fleet.hubs.get(entry.hub_name)
        if hub is None:
            if entry.hub_name in fleet.broken_names:
                continue
            hint = did_you_mean(entry.hub_name, fleet.hubs, "hubs")
            message = (
                f"secrets file of unknown hub '{entry.hub_name}'; a secrets file is named after a hub of its "
                f"community (communities/{entry.directory}/hubs/{entry.hub_name}.yaml): rename or delete it; "
                f"{hint}"
            )
        elif hub.community != entry.directory:
            message = (
                f"hub '{entry.hub_name}' belongs to community '{hub.community}'; "
                f"move this file to communities/{hub.community}/secrets/{entry.hub_name}.yaml"
            )
        else:
            continue
        errors.append(ConfigError(entry.source.file, 1, 1, message))
    return errors


def secret_refs_are_set(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """Every `{secret: KEY}` of a hub names a key of its secrets file (checked without decrypting)."""
    stored = {(e.directory, e.hub_name): set(e.values) | e.malformed for e in fleet.secret_entries}
    errors = []
    for entry in fleet.hub_entries:
        keys = stored.get((entry.directory, entry.hub.name), set())
        for dotted, ref in secret_refs(entry.hub):
            if ref.secret not in keys:
                name = entry.hub.name
                errors.append(
                    fleet.hub_error(
                        entry,
                        dotted,
                        f"{dotted}: secret '{ref.secret}' is not set for hub '{name}'; "
                        f"run `hubfleet secrets set {name} {ref.secret}`",
                    )
                )
    return errors


def fleet_level_refs(settings: FleetSettings) -> list[tuple[str, SecretRef]]:
    """Every `{secret: KEY}` of fleet.yaml, each naming a key of secrets/fleet.yaml: in `monitoring` (alert
    channels), `console` (OIDC client), `front_door` (certificates and keys) and `backups` (the repository's
    password and storage credentials)."""
    key = [("service_token_key", settings.service_token_key)] if settings.service_token_key else []
    return [
        *secret_refs(settings.monitoring, "monitoring"),
        *secret_refs(settings.console, "console"),
        *_optional_refs(settings),
        *key,
    ]


def token_key_warnings(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """Valid, but worth knowing (`hubfleet validate` prints it): Kubernetes hubs without
    `service_token_key` get random service tokens per state directory, so every CI runner (which starts
    empty) makes new ones, restarting the hub and locking out the daemon that probes it."""
    if fleet.settings is None or fleet.fleet_source is None or fleet.settings.service_token_key:
        return []
    kube = {name for name, cluster in fleet.clusters.items() if cluster.kind == "kubernetes"}
    if not any(hub.cluster in kube for hub in fleet.hubs.values()):
        return []
    return [
        fleet.fleet_error(
            "name",
            "warning: this fleet has Kubernetes hubs but no service_token_key, so each machine (and every CI "
            "runner) that deploys a hub gives it new service tokens; add `service_token_key: "
            "{secret: service_token_key}` and set it: python3 -c 'import secrets; "
            "print(secrets.token_hex(32))' | hubfleet secrets set --fleet-level service_token_key",
        )
    ]


def _optional_refs(settings: FleetSettings) -> list[tuple[str, SecretRef]]:
    """The references of the optional blocks `front_door` and `backups`."""
    found = secret_refs(settings.front_door, "front_door") if settings.front_door is not None else []
    return found + (secret_refs(settings.backups, "backups") if settings.backups is not None else [])


def fleet_secret_refs_are_set(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """Every `{secret: KEY}` of fleet.yaml (fleet_level_refs) names a key of secrets/fleet.yaml."""
    if fleet.fleet_source is None or fleet.settings is None:
        return []
    entry = fleet.fleet_secret_entry
    keys = set(entry.values) | entry.malformed if entry else set()
    errors = []
    refs = fleet_level_refs(fleet.settings)
    for dotted, ref in refs:
        if ref.secret not in keys:
            errors.append(
                fleet.fleet_error(
                    dotted,
                    f"{dotted}: fleet-level secret '{ref.secret}' is not set in secrets/fleet.yaml; "
                    f"run `hubfleet secrets set --fleet-level {ref.secret}`",
                )
            )
    return errors


def secrets_have_recipients(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """Secrets in use need at least one operator who can decrypt them."""
    in_use = (
        any(e.values for e in fleet.secret_entries)
        or any(secret_refs(e.hub) for e in fleet.hub_entries)
        or bool(fleet.fleet_secrets)
        or (
            fleet.settings is not None
            and bool(secret_refs(fleet.settings.monitoring) or _optional_refs(fleet.settings))
        )
    )
    if not in_use or fleet.fleet_source is None or fleet.settings is None:
        return []  # fleet.yaml did not validate: its own errors are reported, its operators are unknown
    if any(op.age_recipient for op in fleet.settings.operators):
        return []
    depth, key_pos, _ = fleet.fleet_source.find(["operators"])
    line, col = key_pos if depth else fleet.fleet_source.first_key()
    return [
        ConfigError(
            fleet.fleet_source.file,
            line,
            col,
            "operators: hub secrets are in use but no operator has an age_recipient; run "
            "`hubfleet secrets keygen` and add `age_recipient: age1...` to your operator entry",
        )
    ]

"""Cross-file rules on fleet.yaml `front_door`, the HTTPS server in front of the local hubs and the console:
every local hub has a site there, names and ports are not taken twice, OAuth hubs get an https callback,
certificate files exist and the console has one address.

Each rule is a small function of the loaded fleet returning ConfigErrors; `config.rules` lists them all.
(`{secret: KEY}` values in `front_door` are checked with the other fleet-level secrets, in `rules_secrets`;
a local hub's `domain` without a front door, in `rules_hubs.port_or_domain_by_cluster_kind`.)
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from hubfleet.config.fleet import ConfigError
from hubfleet.config.loader import SourcedFleetConfig
from hubfleet.config.models_auth import OAuthBase
from hubfleet.config.models_front_door import FrontDoor

FRONT_DOOR_DOC = "docs/front-door.md"


def front_door_declared(fleet: SourcedFleetConfig) -> bool:
    """Whether fleet.yaml has a `front_door`; when fleet.yaml did not validate, whether it sets the key
    (its own errors are reported, so rules asking for a front door stay quiet)."""
    if fleet.settings is not None:
        return fleet.settings.front_door is not None
    if fleet.fleet_source is None:
        return False
    depth, _, _ = fleet.fleet_source.find(["front_door"])
    return depth == 1


def _front_door(fleet: SourcedFleetConfig) -> FrontDoor | None:
    if fleet.fleet_source is None or fleet.settings is None:
        return None
    return fleet.settings.front_door


def _is_local(fleet: SourcedFleetConfig, cluster_name: str) -> bool:
    cluster = fleet.clusters.get(cluster_name)
    return cluster is not None and cluster.kind == "local"


def local_hubs_have_a_site(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """With a front door, every local hub is served somewhere: at its own `domain`, or under
    `front_door.domain` at /<hub name>/."""
    door = _front_door(fleet)
    if door is None or door.domain is not None:
        return []
    return [
        fleet.hub_error(
            entry,
            "domain",
            f"domain: the front door cannot serve hub '{entry.hub.name}': it has no domain and fleet.yaml "
            f"sets no `front_door.domain`; add `domain:` to this hub, or `front_door.domain` in fleet.yaml "
            f"to serve it at https://DOMAIN/{entry.hub.name}/",
        )
        for entry in fleet.hub_entries
        if entry.hub.domain is None and _is_local(fleet, entry.hub.cluster)
    ]


def hub_domains_not_front_door_names(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """No hub (local or kubernetes) takes the front door's own name or the console's."""
    door = _front_door(fleet)
    if door is None:
        return []
    taken: dict[str, str] = {}
    if door.domain is not None:
        taken[door.domain] = (
            f"`front_door.domain`, where hubs without a domain are served (https://{door.domain}/<hub name>/)"
        )
    if door.console_domain is not None:
        taken[door.console_domain] = "`front_door.console_domain`, where the web console is served"
    errors = []
    for entry in fleet.hub_entries:
        hub = entry.hub
        if hub.domain not in taken:
            continue
        fix = f"give hub '{hub.name}' a domain of its own"
        if door.domain is not None and _is_local(fleet, hub.cluster):
            fix += f", or remove `domain` to serve it at {fleet.front_door_origin(door.domain)}/{hub.name}/"
        errors.append(
            fleet.hub_error(entry, "domain", f"domain: {hub.domain} is fleet.yaml {taken[hub.domain]}; {fix}")
        )
    return errors


def oauth_hubs_have_https(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """A prod hub signing in through an OAuth provider (github, cilogon, oidc) on a local cluster needs a
    public https address for the provider's callback: the front door's. (With a front door but no site for
    the hub, `local_hubs_have_a_site` reports it.)"""
    if front_door_declared(fleet):
        return []
    return [
        fleet.hub_error(
            entry,
            "auth.type",
            f"auth.type: prod hub '{entry.hub.name}' signs in through {entry.hub.auth.type}, and OAuth "
            f"providers need an https callback URL, but hubs on local cluster '{entry.hub.cluster}' are "
            f"served on 127.0.0.1 only; add a `front_door` block to fleet.yaml (see {FRONT_DOOR_DOC})",
        )
        for entry in fleet.hub_entries
        if entry.hub.stage == "prod"
        and isinstance(entry.hub.auth, OAuthBase)
        and _is_local(fleet, entry.hub.cluster)
    ]


def front_door_ports_free(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """`front_door.http_port` and `https_port` are neither a local hub's port nor the daemon's."""
    door = _front_door(fleet)
    if door is None:
        return []
    users: dict[int, str] = {}
    for entry in fleet.hub_entries:
        if entry.hub.port is not None and _is_local(fleet, entry.hub.cluster):
            users.setdefault(entry.hub.port, f"hub '{entry.hub.name}' ({entry.source.file})")
    metrics_port = fleet.settings.monitoring.metrics_port
    if metrics_port is not None:
        users.setdefault(metrics_port, "the daemon's console and /metrics (monitoring.metrics_port)")
    errors = []
    for key in ("http_port", "https_port"):
        port = getattr(door, key)
        if port in users:
            errors.append(
                fleet.fleet_error(
                    f"front_door.{key}",
                    f"front_door.{key}: port {port} is already used by {users[port]}; give the front door "
                    "another port or move that one",
                )
            )
    return errors


def _missing_file(root: Path, value: str) -> str | None:
    """Why `value` (a path, relative to the fleet directory or absolute) names no file, or None."""
    path = Path(value) if Path(value).is_absolute() else root / value
    if path.is_file():
        return None
    if path.exists():
        return "is not a file"
    return "not found" if Path(value).is_absolute() else "not found in the fleet directory"


def certificate_files_exist(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """Certificate and key paths of `front_door.certificates` and the ACME `ca_root` name existing files.
    (Their `{secret: KEY}` values are checked by `rules_secrets.fleet_secret_refs_are_set`.)"""
    door = _front_door(fleet)
    if door is None:
        return []
    paths: list[tuple[str, str, str, str]] = []  # (dotted key, as shown, path, what belongs there)
    for i, item in enumerate(door.certificates.files):
        for key, what in (("certificate", "its PEM certificate chain"), ("key", "its private key")):
            value = getattr(item, key)
            if isinstance(value, str):
                where = "front_door.certificates.files"
                paths.append((f"{where}.{i}.{key}", f"{where}[{i}].{key}", value, what))
    acme = door.certificates.acme
    if acme is not None and acme.ca_root is not None:
        key = "front_door.certificates.acme.ca_root"
        paths.append((key, key, acme.ca_root, "the CA's root certificate (PEM)"))
    errors = []
    for dotted, shown, value, what in paths:
        problem = _missing_file(fleet.root, value)
        if problem is not None:
            errors.append(
                fleet.fleet_error(
                    dotted,
                    f"{shown}: '{value}' {problem}; put {what} there or fix the path "
                    "(relative to the fleet directory, or absolute)",
                )
            )
    return errors


def _origin(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")


def console_has_one_address(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """`console.public_url` next to `front_door.console_domain` must be that same address: the console is
    served at the console domain and the other one would be ignored."""
    door = _front_door(fleet)
    public_url = fleet.settings.console.public_url if fleet.settings is not None else None
    if door is None or door.console_domain is None or public_url is None:
        return []
    served = fleet.front_door_origin(door.console_domain)
    if _origin(public_url) == _origin(served):
        return []
    return [
        fleet.fleet_error(
            "console.public_url",
            f"console.public_url: '{public_url}' is not where the front door serves the console "
            f"({served}, from front_door.console_domain), so it would be ignored; remove console.public_url",
        )
    ]

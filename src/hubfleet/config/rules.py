"""Cross-file rules on a loaded fleet: each rule is a small function returning ConfigErrors.

Rules see every hub that validated on its own (`LoadedFleet.hub_entries`, duplicates included) and point
at the offending key through `locate_in`, so their errors carry the same `file:line:col` as schema errors.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable

from hubfleet.config.fleet import ConfigError
from hubfleet.config.loader import HubEntry, LoadedFleet, locate_in

Rule = Callable[[LoadedFleet], list[ConfigError]]


def _error(fleet: LoadedFleet, entry: HubEntry, dotted: str, message: str) -> ConfigError:
    file, line, col = locate_in(entry.source, fleet.fleet_source, dotted)
    return ConfigError(file, line, col, message)


def _did_you_mean(name: str, known: Iterable[str], what: str) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    if known:
        return f"known {what}: {', '.join(known)}"
    return f"no {what} are defined"


def unique_hub_names(fleet: LoadedFleet) -> list[ConfigError]:
    first: dict[str, HubEntry] = {}
    errors = []
    for entry in fleet.hub_entries:
        name = entry.hub.name
        if name in first:
            errors.append(
                _error(
                    fleet,
                    entry,
                    "name",
                    f"name: hub name '{name}' is already used by {first[name].source.file}; "
                    "hub names must be unique in the fleet",
                )
            )
        else:
            first[name] = entry
    return errors


def _unique_value(fleet: LoadedFleet, key: str, hint: str) -> list[ConfigError]:
    first: dict[object, HubEntry] = {}
    errors = []
    for entry in fleet.hub_entries:
        value = getattr(entry.hub, key)
        if value is None:
            continue
        if value in first:
            other = first[value]
            errors.append(
                _error(
                    fleet,
                    entry,
                    key,
                    f"{key}: {value} is already used by hub '{other.hub.name}' ({other.source.file}); {hint}",
                )
            )
        else:
            first[value] = entry
    return errors


def unique_ports(fleet: LoadedFleet) -> list[ConfigError]:
    return _unique_value(fleet, "port", "give each hub its own port")


def unique_domains(fleet: LoadedFleet) -> list[ConfigError]:
    return _unique_value(fleet, "domain", "give each hub its own domain")


def references_resolve(fleet: LoadedFleet) -> list[ConfigError]:
    errors = []
    for entry in fleet.hub_entries:
        hub = entry.hub
        # With no valid cluster at all, that is reported once (clusters/) rather than for every hub.
        if fleet.clusters and hub.cluster not in fleet.clusters and hub.cluster not in fleet.broken_names:
            hint = _did_you_mean(hub.cluster, fleet.clusters, "clusters")
            errors.append(
                _error(fleet, entry, "cluster", f"cluster: unknown cluster '{hub.cluster}'; {hint}")
            )
        if hub.community != entry.directory:
            if hub.community in fleet.communities or hub.community in fleet.broken_names:
                errors.append(
                    _error(
                        fleet,
                        entry,
                        "community",
                        f"community: '{hub.community}' does not match the directory "
                        f"communities/{entry.directory}/; set `community: {entry.directory}` "
                        f"or move the file to communities/{hub.community}/hubs/",
                    )
                )
            else:
                hint = _did_you_mean(hub.community, fleet.communities, "communities")
                errors.append(
                    _error(
                        fleet, entry, "community", f"community: unknown community '{hub.community}'; {hint}"
                    )
                )
    return errors


def port_or_domain_by_cluster_kind(fleet: LoadedFleet) -> list[ConfigError]:
    errors = []
    for entry in fleet.hub_entries:
        hub = entry.hub
        cluster = fleet.clusters.get(hub.cluster)
        if cluster is None:
            continue
        if cluster.kind == "local":
            if hub.port is None:
                errors.append(
                    _error(
                        fleet,
                        entry,
                        "port",
                        f"port: required for hubs on local cluster '{cluster.name}'; "
                        "add `port: <1024-65535>`",
                    )
                )
            if hub.domain is not None:
                errors.append(
                    _error(
                        fleet,
                        entry,
                        "domain",
                        f"domain: hubs on local cluster '{cluster.name}' are served on 127.0.0.1:<port>; "
                        "remove domain",
                    )
                )
        else:
            if hub.domain is None:
                errors.append(
                    _error(
                        fleet,
                        entry,
                        "domain",
                        f"domain: required for hubs on kubernetes cluster '{cluster.name}'; "
                        "add `domain: <hub.example.org>`",
                    )
                )
            if hub.port is not None:
                errors.append(
                    _error(
                        fleet,
                        entry,
                        "port",
                        f"port: hubs on kubernetes cluster '{cluster.name}' are served on their domain; "
                        "remove port",
                    )
                )
    return errors


def prod_has_staging(fleet: LoadedFleet) -> list[ConfigError]:
    staging = {(e.hub.community, e.hub.cluster) for e in fleet.hub_entries if e.hub.stage == "staging"}
    errors = []
    for entry in fleet.hub_entries:
        hub = entry.hub
        known = (
            hub.cluster in fleet.clusters
            and hub.community == entry.directory
            and entry.directory not in fleet.broken_hub_dirs
        )
        if hub.stage == "prod" and known and (hub.community, hub.cluster) not in staging:
            errors.append(
                _error(
                    fleet,
                    entry,
                    "stage",
                    f"stage: prod hub '{hub.name}' needs a staging hub of community '{hub.community}' "
                    f"on cluster '{hub.cluster}' to deploy to first; "
                    f"add one in communities/{entry.directory}/hubs/",
                )
            )
    return errors


def has_auth(fleet: LoadedFleet) -> list[ConfigError]:
    return [
        _error(
            fleet,
            e,
            "auth",
            f"auth: hub '{e.hub.name}' has no auth; "
            "set `auth:` in the hub file or in `defaults` in fleet.yaml",
        )
        for e in fleet.hub_entries
        if e.hub.auth is None
    ]


def admins_not_empty(fleet: LoadedFleet) -> list[ConfigError]:
    return [
        _error(
            fleet,
            e,
            "auth.admin_users",
            f"auth.admin_users: hub '{e.hub.name}' has no admin users; list at least one",
        )
        for e in fleet.hub_entries
        if e.hub.auth is not None and not e.hub.auth.admin_users
    ]


def no_dummy_auth_on_prod(fleet: LoadedFleet) -> list[ConfigError]:
    return [
        _error(
            fleet,
            e,
            "auth.type",
            f"auth.type: dummy auth is refused on prod hub '{e.hub.name}'; use `type: native`",
        )
        for e in fleet.hub_entries
        if e.hub.stage == "prod" and e.hub.auth is not None and e.hub.auth.type == "dummy"
    ]


RULES: list[Rule] = [
    unique_hub_names,
    unique_ports,
    unique_domains,
    references_resolve,
    port_or_domain_by_cluster_kind,
    prod_has_staging,
    has_auth,
    admins_not_empty,
    no_dummy_auth_on_prod,
]


def check_rules(fleet: LoadedFleet) -> list[ConfigError]:
    errors: list[ConfigError] = []
    for rule in RULES:
        errors.extend(rule(fleet))
    return errors

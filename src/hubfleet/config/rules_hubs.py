"""Cross-file rules on the hubs themselves: unique names, ports and domains, references to clusters and
communities, how a hub is served on its cluster, a staging hub before every prod hub, Kubernetes settings.

Each rule is a small function of the loaded fleet returning ConfigErrors; `config.rules` lists them all.
"""

from __future__ import annotations

from pathlib import Path

from hubfleet.config.fleet import ConfigError
from hubfleet.config.loader import HubEntry, SourcedFleetConfig
from hubfleet.config.rules_front_door import FRONT_DOOR_DOC, front_door_declared
from hubfleet.suggest import did_you_mean


def unique_hub_names(fleet: SourcedFleetConfig) -> list[ConfigError]:
    first: dict[str, HubEntry] = {}
    errors = []
    for entry in fleet.hub_entries:
        name = entry.hub.name
        if name in first:
            errors.append(
                fleet.hub_error(
                    entry,
                    "name",
                    f"name: hub name '{name}' is already used by {first[name].source.file}; "
                    "hub names must be unique in the fleet",
                )
            )
        else:
            first[name] = entry
    return errors


def _unique_value(fleet: SourcedFleetConfig, key: str, hint: str) -> list[ConfigError]:
    first: dict[object, HubEntry] = {}
    errors = []
    for entry in fleet.hub_entries:
        value = getattr(entry.hub, key)
        if value is None:
            continue
        if value in first:
            other = first[value]
            errors.append(
                fleet.hub_error(
                    entry,
                    key,
                    f"{key}: {value} is already used by hub '{other.hub.name}' ({other.source.file}); {hint}",
                )
            )
        else:
            first[value] = entry
    return errors


def unique_ports(fleet: SourcedFleetConfig) -> list[ConfigError]:
    return _unique_value(fleet, "port", "give each hub its own port")


def unique_domains(fleet: SourcedFleetConfig) -> list[ConfigError]:
    return _unique_value(fleet, "domain", "give each hub its own domain")


def references_resolve(fleet: SourcedFleetConfig) -> list[ConfigError]:
    errors = []
    for entry in fleet.hub_entries:
        hub = entry.hub
        # With no valid cluster at all, that is reported once (clusters/) rather than for every hub.
        if fleet.clusters and hub.cluster not in fleet.clusters and hub.cluster not in fleet.broken_names:
            hint = did_you_mean(hub.cluster, fleet.clusters, "clusters")
            errors.append(
                fleet.hub_error(entry, "cluster", f"cluster: unknown cluster '{hub.cluster}'; {hint}")
            )
        if hub.community != entry.directory:
            if hub.community in fleet.communities or hub.community in fleet.broken_names:
                errors.append(
                    fleet.hub_error(
                        entry,
                        "community",
                        f"community: '{hub.community}' does not match the directory "
                        f"communities/{entry.directory}/; set `community: {entry.directory}` "
                        f"or move the file to communities/{hub.community}/hubs/",
                    )
                )
            else:
                hint = did_you_mean(hub.community, fleet.communities, "communities")
                errors.append(
                    fleet.hub_error(
                        entry, "community", f"community: unknown community '{hub.community}'; {hint}"
                    )
                )
    return errors


def port_or_domain_by_cluster_kind(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """Kubernetes hubs have a domain and no port; local hubs a port (their address on 127.0.0.1), and a
    domain only when fleet.yaml has a front door to serve it."""
    errors = []
    for entry in fleet.hub_entries:
        hub = entry.hub
        cluster = fleet.clusters.get(hub.cluster)
        if cluster is None:
            continue
        if cluster.kind == "local":
            if hub.port is None:
                errors.append(
                    fleet.hub_error(
                        entry,
                        "port",
                        f"port: required for hubs on local cluster '{cluster.name}'; "
                        "add `port: <1024-65535>`",
                    )
                )
            if hub.domain is not None and not front_door_declared(fleet):
                errors.append(
                    fleet.hub_error(
                        entry,
                        "domain",
                        f"domain: hubs on local cluster '{cluster.name}' are served on 127.0.0.1:<port> "
                        f"only, as fleet.yaml has no front door; add a `front_door` block to fleet.yaml "
                        f"(see {FRONT_DOOR_DOC}) to serve this hub at https://{hub.domain}, or remove domain",
                    )
                )
        else:
            if hub.domain is None:
                errors.append(
                    fleet.hub_error(
                        entry,
                        "domain",
                        f"domain: required for hubs on kubernetes cluster '{cluster.name}'; "
                        "add `domain: <hub.example.org>`",
                    )
                )
            if hub.port is not None:
                errors.append(
                    fleet.hub_error(
                        entry,
                        "port",
                        f"port: hubs on kubernetes cluster '{cluster.name}' are served on their domain; "
                        "remove port",
                    )
                )
    return errors


def prod_has_staging(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """Every prod hub has a staging hub to deploy to first: its community's on its cluster, or the
    cluster's `staging_hub`."""
    staging = {(e.hub.community, e.hub.cluster) for e in fleet.hub_entries if e.hub.stage == "staging"}
    errors = []
    for entry in fleet.hub_entries:
        hub = entry.hub
        known = (
            hub.cluster in fleet.clusters
            and hub.community == entry.directory
            and entry.directory not in fleet.broken_hub_dirs
        )
        gated = known and fleet.clusters[hub.cluster].staging_hub is not None
        if hub.stage == "prod" and known and not gated and (hub.community, hub.cluster) not in staging:
            errors.append(
                fleet.hub_error(
                    entry,
                    "stage",
                    f"stage: prod hub '{hub.name}' needs a staging hub of community '{hub.community}' "
                    f"on cluster '{hub.cluster}' to deploy to first; "
                    f"add one in communities/{entry.directory}/hubs/, or name a staging hub of the cluster "
                    f"in {fleet.cluster_files.get(hub.cluster, 'its cluster file')} (`staging_hub: NAME`)",
                )
            )
    return errors


def cluster_staging_hub_valid(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """A cluster's `staging_hub` is a hub of the fleet, on that cluster, and a staging hub."""
    hubs = {e.hub.name: e.hub for e in fleet.hub_entries}
    errors = []
    for name, cluster in sorted(fleet.clusters.items()):
        wanted = cluster.staging_hub
        if wanted is None or wanted in fleet.broken_names:
            continue
        file = fleet.cluster_files.get(name, f"clusters/{name}.yaml")
        hub = hubs.get(wanted)
        if hub is None:
            problem = f"hub '{wanted}' does not exist; {did_you_mean(wanted, hubs, 'hubs')}"
        elif hub.cluster != name:
            problem = f"hub '{wanted}' runs on cluster '{hub.cluster}', not on '{name}'; name one of '{name}'"
        elif hub.stage != "staging":
            problem = f"hub '{wanted}' is a {hub.stage} hub; name a hub with `stage: staging`"
        else:
            continue
        line = _line_of(fleet.root / file, "staging_hub:")
        message = f"staging_hub: {problem} (it gates the prod hubs of cluster '{name}')"
        errors.append(ConfigError(file, line, 1, message))
    return errors


def _line_of(path: Path, prefix: str) -> int:
    """The 1-based line of the top-level key `prefix` in `path` (1 when it cannot be read)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 1
    return next((i for i, line in enumerate(lines, 1) if line.startswith(prefix)), 1)


def kubernetes_settings_on_kubernetes_hubs(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """A local hub's own file must not set `kubernetes` (inherited fleet defaults are ignored there)."""
    errors = []
    for entry in fleet.hub_entries:
        cluster = fleet.clusters.get(entry.hub.cluster)
        # the text test spares parsing positions (slow) for the many files that cannot set the key
        if cluster is None or cluster.kind != "local" or "kubernetes" not in entry.source.text:
            continue
        depth, _, _ = entry.source.find(["kubernetes"])
        if depth == 1:
            errors.append(
                fleet.hub_error(
                    entry,
                    "kubernetes",
                    f"kubernetes: kubernetes settings on a hub of local cluster '{cluster.name}'; "
                    "remove them or move the hub to a kubernetes cluster",
                )
            )
    return errors


def environments_consistent(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """Environment slugs are unique within a hub, and at most one environment (and one choice of each
    option) is the default."""
    errors = []
    for entry in fleet.hub_entries:
        environments = entry.hub.environments
        seen: dict[str, int] = {}
        defaults = [i for i, env in enumerate(environments) if env.default]
        for i, env in enumerate(environments):
            if env.slug in seen:
                errors.append(
                    fleet.hub_error(
                        entry,
                        f"environments.{i}.slug",
                        f"environments[{i}].slug: '{env.slug}' is already used by "
                        f"environments[{seen[env.slug]}]; "
                        "give each environment its own slug",
                    )
                )
            seen.setdefault(env.slug, i)
            for option_slug, option in env.options.items():
                chosen = [slug for slug, choice in option.choices.items() if choice.default]
                if len(chosen) > 1:
                    errors.append(
                        fleet.hub_error(
                            entry,
                            f"environments.{i}.options.{option_slug}",
                            f"environments[{i}].options.{option_slug}: choices {', '.join(chosen)} all set "
                            "`default: true`; keep it on one",
                        )
                    )
        for i in defaults[1:]:
            errors.append(
                fleet.hub_error(
                    entry,
                    f"environments.{i}.default",
                    f"environments[{i}].default: environments[{defaults[0]}] is already the default; at most "
                    "one environment may set `default: true`",
                )
            )
    return errors

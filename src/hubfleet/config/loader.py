"""The fleet directory read into models, file by file, keeping where every value came from.

Each file is parsed (`yaml_source`) and validated against its model on its own (`pydantic_errors`).
Clusters are read before communities, so each hub is merged over its layers (`layers`, merged by
`defaults`): fleet.yaml `defaults`, its cluster's `defaults` (the cluster its file names, else its
community's `defaults.cluster`), its community's `defaults`, then its own file. The result,
`SourcedFleetConfig`, is the `FleetConfig` plus what the cross-file rules need to point at the right line:
every source file, every hub that validated (duplicates included, each with its layers) and every secrets
file. The rules themselves run in `validate`, above this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubfleet.config.cache import FleetCache
from hubfleet.config.defaults import LAYER_NAMES, merge_layers
from hubfleet.config.fleet import ConfigError, FleetConfig
from hubfleet.config.layers import HubLayers, Layer
from hubfleet.config.models import Cluster, Community, FleetSettings, Hub
from hubfleet.config.pydantic_errors import required_keys, validate_model
from hubfleet.config.secrets_file import (
    FLEET_SECRETS_FILE,
    SECRETS_DIR,
    SecretsEntry,
    read_secrets_file,
)
from hubfleet.config.yaml_source import YAML_SUFFIXES, Source, plain_data, read_yaml, relative, yaml_files

_FLEET_KEYS = required_keys(FleetSettings)
_CLUSTER_KEYS = required_keys(Cluster)
_COMMUNITY_KEYS = required_keys(Community)
_HUB_KEYS = required_keys(Hub)


@dataclass
class HubEntry:
    """A hub as loaded from its file (before duplicates are dropped from `FleetConfig.hubs`)."""

    hub: Hub
    source: Source
    directory: str
    """The community directory the file is in."""
    layers: HubLayers | None = None
    """Where each of its effective settings came from (fleet, cluster, community defaults, hub file)."""


@dataclass
class SourcedFleetConfig(FleetConfig):
    """FleetConfig plus what the rules need to point at the right line: every source file and hub entry."""

    fleet_source: Source | None = None
    hub_entries: list[HubEntry] = field(default_factory=list)
    secret_entries: list[SecretsEntry] = field(default_factory=list)
    fleet_secret_entry: SecretsEntry | None = None
    """secrets/fleet.yaml (fleet-level secrets), when the file exists."""
    broken_names: set[str] = field(default_factory=set)
    """Names read from files that failed validation: references to them are not reported again."""
    broken_hub_dirs: set[str] = field(default_factory=set)
    """Community directories holding a hub file that failed validation (its stage is unknown)."""
    fleet_layer: Layer | None = None
    cluster_layers: dict[str, Layer] = field(default_factory=dict)
    """Cluster name -> the `defaults` of its file (clusters whose file validated)."""
    community_layers: dict[str, Layer] = field(default_factory=dict)
    """Community directory -> the `defaults` of its community.yaml (communities whose file validated)."""
    broken_layers: set[str] = field(default_factory=set)
    community_sources: dict[str, Source] = field(default_factory=dict)
    """Community name -> its community.yaml as read (to point at its events)."""
    """Files whose `defaults` had errors (reported there): hub errors from them are not reported again."""

    def entry(self, hub_name: str) -> HubEntry:
        return next(e for e in self.hub_entries if e.hub.name == hub_name)

    def locate(self, hub_name: str, dotted_path: str) -> tuple[str, int, int]:
        """Where `dotted_path` of a hub's effective settings comes from: (file, line, col).

        The lowest layer that sets the key (the hub file, its community's, its cluster's or fleet.yaml's
        `defaults`), else the one that sets the nearest enclosing key, else the hub file's first key.
        """
        return _layers(self.entry(hub_name)).locate(dotted_path)

    def hub_error(self, entry: HubEntry, dotted_path: str, message: str) -> ConfigError:
        """An error about `dotted_path` of a hub's effective settings, where that comes from (`locate`)."""
        return ConfigError(*_layers(entry).locate(dotted_path), message)

    def fleet_error(self, dotted_path: str, message: str) -> ConfigError:
        """An error about `dotted_path` of fleet.yaml, at that key or the nearest enclosing one it sets."""
        assert self.fleet_source is not None
        path = [int(p) if p.isdigit() else p for p in dotted_path.split(".")]
        _, key_pos, _ = self.fleet_source.find(path)
        return ConfigError(self.fleet_source.file, *key_pos, message)

    def community_error(self, community: str, dotted_path: str, message: str) -> ConfigError:
        """An error about `dotted_path` of a community's file, at that key or the nearest enclosing one."""
        source = self.community_sources[community]
        path = [int(p) if p.isdigit() else p for p in dotted_path.split(".")]
        _, key_pos, _ = source.find(path)
        return ConfigError(source.file, *key_pos, message)

    def layers_of(self, directory: str, plain: dict[str, Any], source: Source) -> HubLayers:
        """The layers of a hub file (read from `directory`), fleet.yaml's `defaults` first."""
        community = self.community_layers.get(directory)
        cluster = plain.get("cluster")
        if not isinstance(cluster, str) and community is not None:
            cluster = community.data.get("cluster")
        found = [
            self.fleet_layer,
            self.cluster_layers.get(cluster) if isinstance(cluster, str) else None,
            community,
        ]
        return HubLayers(
            [*(layer for layer in found if layer is not None), Layer(LAYER_NAMES[3], source, plain, ())]
        )


def _layers(entry: HubEntry) -> HubLayers:
    return entry.layers or HubLayers([Layer(LAYER_NAMES[3], entry.source, {}, ())])


def load_fleet_files(
    root: Path, cache: FleetCache | None = None
) -> tuple[SourcedFleetConfig | None, list[ConfigError]]:
    """Every file of the fleet in `root` read and validated on its own, cross-file rules not run:
    (the fleet, the errors so far); the fleet is None when fleet.yaml is missing or unreadable. With a
    `cache`, files parsed before (same bytes) are not parsed again; every one is still validated.

    The secrets commands use this directly: they must work while validation still reports
    `secret 'KEY' is not set` (that is how a new secret gets set).
    """
    errors: list[ConfigError] = []
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "fleet directory not found"
        errors.append(
            ConfigError(str(root), 1, 1, f"{what}; pass --fleet DIR pointing at a directory with fleet.yaml")
        )
        return None, errors

    fleet_file = root / "fleet.yaml"
    if not fleet_file.is_file():
        errors.append(
            ConfigError("fleet.yaml", 1, 1, "file not found; create it with at least `name: <fleet-name>`")
        )
        fleet_source = None
    else:
        parsed = read_yaml(root, fleet_file, _FLEET_KEYS, errors)
        fleet_source, plain = parsed if parsed is not None else (None, None)
    fleet: FleetSettings | None = None
    layer: _CheckedLayer | None = None
    if fleet_source is not None:
        # fleet.yaml is read from ruamel's tree even when the fast path accepted it: the rules look up
        # positions in it anyway, and where the two parsers disagree this is what validation has always seen.
        plain = plain_data(fleet_source.tree)
        fleet, layer = _validate_layered(FleetSettings, plain, fleet_source, errors, LAYER_NAMES[0])

    config = SourcedFleetConfig(root=root, settings=fleet, fleet_source=fleet_source)  # type: ignore[arg-type]
    config.fleet_layer = _usable(config, layer)
    _load_clusters(root, config, errors, cache)
    _load_communities(root, config, errors, cache)
    for entry in config.secret_entries:
        config.secrets.setdefault(entry.hub_name, entry.values)
    if (root / FLEET_SECRETS_FILE).is_file():
        config.fleet_secret_entry = read_secrets_file(root, root / FLEET_SECRETS_FILE, "", None, errors)
        if config.fleet_secret_entry is not None:
            config.fleet_secrets = dict(config.fleet_secret_entry.values)
    if fleet_source is None:
        # Without fleet.yaml the defaults are unknown: cross-file rules would report noise.
        return None, errors
    return config, errors


def _load_clusters(
    root: Path, config: SourcedFleetConfig, errors: list[ConfigError], cache: FleetCache | None
) -> None:
    found = 0
    for path in yaml_files(root / "clusters"):
        found += 1
        parsed = read_yaml(root, path, _CLUSTER_KEYS, errors, cache)
        if parsed is None:
            continue
        source, plain = parsed
        cluster, layer = _validate_layered(Cluster, plain, source, errors, LAYER_NAMES[1])
        if cluster is None:
            _remember_name(config, plain)
            continue
        if cluster.name in config.clusters:
            errors.append(
                source.at_value(
                    "name",
                    f"name: cluster '{cluster.name}' is already defined in "
                    f"{config.cluster_files[cluster.name]}; cluster names must be unique",
                )
            )
            continue
        config.clusters[cluster.name] = cluster
        config.cluster_files[cluster.name] = source.file
        if (usable := _usable(config, layer)) is not None:
            config.cluster_layers[cluster.name] = usable
    if not found:
        errors.append(
            ConfigError(
                "clusters/",
                1,
                1,
                "no cluster defined; add a file such as clusters/local.yaml "
                "with `name: local` and `kind: local`",
            )
        )


def _load_communities(
    root: Path, config: SourcedFleetConfig, errors: list[ConfigError], cache: FleetCache | None
) -> None:
    communities_dir = root / "communities"
    for name, entry in _scan(communities_dir):
        if not entry.is_dir():
            if name.endswith(YAML_SUFFIXES):
                errors.append(
                    ConfigError(
                        f"communities/{name}",
                        1,
                        1,
                        "files here are ignored; a community is a directory: "
                        "move this to communities/<name>/community.yaml",
                    )
                )
            continue
        _load_community(root, communities_dir / name, config, errors, cache)


def _scan(directory: Path) -> list[tuple[str, os.DirEntry[str]]]:
    """The entries of `directory` by name, hidden ones left out; none when it cannot be listed. One
    `scandir` instead of a `Path` and a `stat` per name: 2,500 communities made that a tenth of a load."""
    try:
        with os.scandir(directory) as found:
            return sorted((e.name, e) for e in found if not e.name.startswith("."))
    except OSError:
        return []


def _yaml_in(directory: Path, entries: list[tuple[str, os.DirEntry[str]]]) -> list[Path]:
    """What `yaml_files(directory)` returns, from its scanned entries."""
    return [
        directory / name
        for name, entry in entries
        if name.endswith(YAML_SUFFIXES) and (entry.is_file() or entry.is_symlink())
    ]


def _yaml_paths(directory: str) -> list[str]:
    """`yaml_files` as strings: 5,000 hub files' `Path`s were a tenth of a warm load."""
    try:
        with os.scandir(directory) as found:
            names = sorted(
                e.name
                for e in found
                if not e.name.startswith(".")
                and e.name.endswith(YAML_SUFFIXES)
                and (e.is_file() or e.is_symlink())
            )
    except OSError:
        return []
    return [f"{directory}/{name}" for name in names]


def _load_community(
    root: Path,
    directory: Path,
    config: SourcedFleetConfig,
    errors: list[ConfigError],
    cache: FleetCache | None = None,
) -> None:
    name = directory.name
    entries = _scan(directory)
    listed = dict(entries)
    found_file = next(
        (f for f in ("community.yaml", "community.yml") if f in listed and listed[f].is_file()), None
    )
    if found_file is None:
        errors.append(
            ConfigError(
                f"communities/{name}/community.yaml",
                1,
                1,
                f"file not found; every community directory needs one, with at least `name: {name}`",
            )
        )
        config.broken_names.add(name)
    else:
        parsed = read_yaml(root, directory / found_file, _COMMUNITY_KEYS, errors, cache)
        community = None
        source = None
        if parsed is not None:
            source, plain = parsed
            community, layer = _validate_layered(Community, plain, source, errors, LAYER_NAMES[2])
            if (usable := _usable(config, layer)) is not None:
                config.community_layers[name] = usable
            if community is not None and community.name != name:
                errors.append(
                    source.at_value(
                        "name",
                        f"name: '{community.name}' must equal the directory name '{name}'; "
                        "rename the directory or the community",
                    )
                )
                community = None
        if community is None:
            config.broken_names.add(name)
        else:
            config.communities[name] = community
            config.community_files[name] = source.file  # type: ignore[union-attr]
            config.community_sources[name] = source  # type: ignore[assignment]

    for path in _yaml_in(directory, entries):
        if path.stem != "community":
            errors.append(
                ConfigError(
                    relative(root, path),
                    1,
                    1,
                    f"files here are ignored; put hub files in communities/{name}/hubs/",
                )
            )
    for path in _yaml_paths(f"{directory}/hubs") if "hubs" in listed else []:
        parsed = read_yaml(root, path, _HUB_KEYS, errors, cache)
        if parsed is None:
            config.broken_hub_dirs.add(name)
            continue
        source, plain = parsed
        layers = config.layers_of(name, plain, source)
        merged = merge_layers([layer.data for layer in layers.layers])
        if "kubernetes" in merged and "kubernetes" not in plain and _on_local_cluster(config, merged):
            # inherited kubernetes settings mean nothing on a local hub (its own are an error, see the rules)
            merged = {k: v for k, v in merged.items() if k != "kubernetes"}
        found: list[ConfigError] = []
        hub = validate_model(Hub, merged, layers, found)
        # an error in a layer whose own errors were reported (once, in its file) is not reported per hub
        errors.extend(e for e in found if e.file not in config.broken_layers)
        if hub is None:
            _remember_name(config, plain)
            config.broken_hub_dirs.add(name)
            continue
        config.hub_entries.append(HubEntry(hub=hub, source=source, directory=name, layers=layers))
        if hub.name not in config.hubs:
            config.hubs[hub.name] = hub
            config.hub_files[hub.name] = Path(source.file)
    secrets_files = yaml_files(directory / SECRETS_DIR) if SECRETS_DIR in listed else []
    for path in secrets_files:
        entry = read_secrets_file(root, path, name, path.stem, errors)
        if entry is not None:
            config.secret_entries.append(entry)


@dataclass
class _CheckedLayer:
    layer: Layer
    broken: bool
    """Its own errors were reported: errors of hubs about its values are not reported again."""


def _validate_layered(
    model: Any, plain: dict[str, Any], source: Source, errors: list[ConfigError], layer_name: str
) -> tuple[Any, _CheckedLayer | None]:
    """Validate a file that holds a layer of `defaults`: (its model or None, its layer or None when
    `defaults` is not a mapping). Required keys the layer leaves out are for a later layer (or the hub) to
    give, so they are no error here."""
    found: list[ConfigError] = []
    result = validate_model(model, plain, source, found, partial="defaults")
    errors.extend(found)
    if result is None and not found:  # only keys left to a later layer are missing
        result = validate_model(model, {k: v for k, v in plain.items() if k != "defaults"}, source, errors)
    defaults = plain.get("defaults", {})
    if not isinstance(defaults, dict):
        return result, None
    broken = any(e.message.startswith("defaults") for e in found)
    return result, _CheckedLayer(Layer(layer_name, source, defaults), broken)


def _usable(config: SourcedFleetConfig, checked: _CheckedLayer | None) -> Layer | None:
    """The layer hubs merge over; a broken one still (its hubs' errors in it are not reported again)."""
    if checked is None:
        return None
    if checked.broken:
        config.broken_layers.add(checked.layer.source.file)
    return checked.layer


def _on_local_cluster(config: SourcedFleetConfig, merged: dict[str, Any]) -> bool:
    name = merged.get("cluster")
    cluster = config.clusters.get(name) if isinstance(name, str) else None
    return cluster is not None and cluster.kind == "local"


def _remember_name(config: SourcedFleetConfig, plain: Any) -> None:
    if isinstance(plain, dict) and isinstance(plain.get("name"), str):
        config.broken_names.add(plain["name"])

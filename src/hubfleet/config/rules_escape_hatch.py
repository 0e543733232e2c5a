"""Cross-file rules on the escape hatches (`extra_config`, `kubernetes.extra_values`) and the layers.

A prod hub whose escape hatch replaces the authenticator or the spawner hubfleet configures loses what
hubfleet checks about them (who may log in, staff admins, the synthetic check's user, resource limits)
without anyone noticing; validation refuses it unless the hub file says so with `allow_overrides`.

Each rule is a small function of the loaded fleet returning ConfigErrors; `config.rules` lists them all.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from typing import Any

from hubfleet.config.fleet import ConfigError
from hubfleet.config.loader import HubEntry, SourcedFleetConfig

REPLACED_TRAITS = {"authenticator_class": "authenticator", "spawner_class": "spawner"}
"""JupyterHub traits that replace a part hubfleet configures, and the `allow_overrides` entry allowing it."""


def _replaced_in_python(code: str) -> Iterator[tuple[int, str]]:
    """(line in `code`, part) for every assignment to `<...>.JupyterHub.authenticator_class` or
    `spawner_class` (`c.JupyterHub.spawner_class = ...`, also augmented and annotated assignments)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return  # the model refuses extra_config that does not compile; chart extraConfig is the chart's
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if (
                    isinstance(sub, ast.Attribute)
                    and sub.attr in REPLACED_TRAITS
                    and isinstance(sub.value, ast.Attribute)
                    and sub.value.attr == "JupyterHub"
                ):
                    yield node.lineno, REPLACED_TRAITS[sub.attr]


def _replaced_in_values(values: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], int, str]]:
    """(path in extra_values, line in that value, part) for `hub.config.JupyterHub.<trait>` and for
    `hub.extraConfig` entries that assign it in Python."""
    hub = values.get("hub")
    if not isinstance(hub, Mapping):
        return
    config = hub.get("config")
    jupyterhub = config.get("JupyterHub") if isinstance(config, Mapping) else None
    if isinstance(jupyterhub, Mapping):
        for trait, part in REPLACED_TRAITS.items():
            if trait in jupyterhub:
                yield ("hub", "config", "JupyterHub", trait), 1, part
    extra = hub.get("extraConfig")
    if isinstance(extra, Mapping):
        for name, code in extra.items():
            if isinstance(code, str):
                for line, part in _replaced_in_python(code):
                    yield ("hub", "extraConfig", str(name)), line, part


def _code_line(entry: HubEntry, path: tuple[str, ...], line: int) -> tuple[str, int, int]:
    """file:line:col of line `line` of the text value at `path` (block scalars `|`, `>` start on the line
    after the indicator), in the layer the value came from."""
    assert entry.layers is not None
    file, depth, key_pos, value_pos = entry.layers.where(list(path))
    if depth < len(path):
        return file, *key_pos
    source = next(layer.source for layer in entry.layers.layers if layer.source.file == file)
    lines = source.text.splitlines()
    text = lines[value_pos[0] - 1] if value_pos[0] <= len(lines) else ""
    if text[value_pos[1] - 1 : value_pos[1]] in ("|", ">"):
        return file, value_pos[0] + line, key_pos[1]
    return file, value_pos[0] + line - 1, value_pos[1]


def no_replaced_authenticator_or_spawner_on_prod(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """A prod hub's `extra_config` or `kubernetes.extra_values` must not replace the authenticator or the
    spawner unless its own file lists that part in `allow_overrides`."""
    errors = []
    for entry in fleet.hub_entries:
        hub = entry.hub
        if hub.stage != "prod":
            continue
        found = [(("extra_config",), line, part) for line, part in _replaced_in_python(hub.extra_config)]
        if hub.kubernetes is not None and _on_kubernetes(fleet, entry):
            found += [
                (("kubernetes", "extra_values", *path), line, part)
                for path, line, part in _replaced_in_values(hub.kubernetes.extra_values)
            ]
        for path, line, part in found:
            if part in hub.allow_overrides:
                continue
            file, at_line, col = _code_line(entry, path, line)
            errors.append(
                ConfigError(
                    file,
                    at_line,
                    col,
                    f"{'.'.join(path)}: replaces the {part} of prod hub '{hub.name}', which hubfleet "
                    "configures and checks (who may log in, staff admins, the synthetic check, limits); use "
                    f"the hub's settings instead or, if this is intended, add `allow_overrides: [{part}]` "
                    f"to {entry.source.file}",
                )
            )
    return errors


def _on_kubernetes(fleet: SourcedFleetConfig, entry: HubEntry) -> bool:
    cluster = fleet.clusters.get(entry.hub.cluster)
    return cluster is not None and cluster.kind == "kubernetes"


def no_kubernetes_defaults_on_local_clusters(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """`defaults.kubernetes` in a local cluster's file would be ignored by every hub on it: say so."""
    errors = []
    for name, layer in fleet.cluster_layers.items():
        cluster = fleet.clusters.get(name)
        if cluster is None or cluster.kind != "local" or "kubernetes" not in layer.data:
            continue
        _, key_pos, _ = layer.source.find(["defaults", "kubernetes"])
        errors.append(
            ConfigError(
                layer.source.file,
                *key_pos,
                f"defaults.kubernetes: hubs of local cluster '{name}' have no kubernetes settings; remove it",
            )
        )
    return errors

"""How a hub inherits its settings: four layers, each merged over the one before.

1. `defaults` in fleet.yaml, 2. `defaults` in the hub's cluster file, 3. `defaults` in its community.yaml,
4. the hub file. Mappings merge key by key at every depth (`kubernetes.extra_values` included), lists and
scalars are replaced, and an `auth` block of another `type` replaces the inherited one whole.

The loader merges with `merge_layers`, error positions and `hubfleet render --explain` follow the origins that
`merge_tracked` records, and the generated config reference states `merge_rule()`, so the three cannot
disagree.
"""

from __future__ import annotations

from typing import Any

LAYER_NAMES = ("fleet defaults", "cluster defaults", "community defaults", "hub")
"""The layers in merge order; a layer's index in a merge is its index here."""
REPLACED_BY_TYPE = "auth"
"""The one mapping that is replaced whole when its `type` differs from the inherited one."""

Path = tuple[str | int, ...]


def _replaces(key: str, base: dict[str, Any], value: dict[str, Any]) -> bool:
    """An `auth` block naming another type replaces the inherited one (one without `type` extends it)."""
    return key == REPLACED_BY_TYPE and "type" in value and "type" in base and value["type"] != base["type"]


def _deep(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        old = merged.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and value is not old:
            merged[key] = _deep(old, value)
        else:
            merged[key] = value
    return merged


def merge_layer(base: Any, over: Any) -> Any:
    """`over` (a hub's or a layer's settings) merged over `base` (what it inherits)."""
    if not isinstance(over, dict) or not isinstance(base, dict) or not base:
        return over
    merged = dict(base)
    for key, value in over.items():
        old = merged.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and not _replaces(key, old, value):
            merged[key] = _deep(old, value)
        else:
            merged[key] = value
    return merged


def merge_defaults(defaults: dict[str, Any], hub: Any) -> Any:
    """The hub file merged over one layer of defaults (kept for callers that have only fleet.yaml's)."""
    return merge_layer(defaults, hub)


def merge_layers(layers: list[Any]) -> Any:
    """Every layer merged over the ones before it (first: fleet defaults; last: the hub file)."""
    merged: Any = {}
    for layer in layers:
        if layer:
            merged = merge_layer(merged, layer) if merged else layer
    return merged


def merge_tracked(layers: list[Any]) -> tuple[Any, dict[Path, int]]:
    """`merge_layers`, plus where each value came from: path -> index of the layer that set it.

    A mapping's path maps to the last layer that set any of its keys; a list or scalar's to the layer it is
    from (list items too). Slower than `merge_layers`: used for error positions and `--explain` only.
    """
    merged: dict[str, Any] = {}
    origins: dict[Path, int] = {}
    for index, layer in enumerate(layers):
        if isinstance(layer, dict):
            _merge_tracked(merged, layer, (), index, origins, top=True)
    return merged, origins


def _merge_tracked(
    merged: dict[str, Any], over: dict[str, Any], path: Path, index: int, origins: dict[Path, int], top: bool
) -> None:
    for key, value in over.items():
        here = (*path, key)
        old = merged.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and not (top and _replaces(key, old, value)):
            merged[key] = dict(old)
            origins[here] = index
            _merge_tracked(merged[key], value, here, index, origins, top=False)
        else:
            for stale in [p for p in origins if p[: len(here)] == here]:
                del origins[stale]
            merged[key] = value
            _record(value, here, index, origins)


def _record(value: Any, path: Path, index: int, origins: dict[Path, int]) -> None:
    origins[path] = index
    if isinstance(value, dict):
        for key, item in value.items():
            _record(item, (*path, key), index, origins)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _record(item, (*path, i), index, origins)


def merge_rule() -> str:
    """The inheritance rule in words, for the documentation: "each layer is merged over ..."."""
    return (
        "each layer is merged over the one before it (fleet.yaml `defaults`, then `defaults` in the hub's "
        "cluster file, then `defaults` in its community.yaml, then the hub file): mappings merge key by key "
        "at every depth (`kubernetes.extra_values` included), lists and single values are replaced, and "
        "an `auth` block whose `type` differs from the inherited one replaces it whole (same or no `type`: "
        "merged)"
    )

"""The layers a hub's settings come from, and which layer (file and line) gave each effective value.

A hub's settings are fleet.yaml `defaults`, then `defaults` in its cluster file, then `defaults` in its
community.yaml, then its own file, merged by `config.defaults`. `HubLayers` keeps each layer's data and file
so that an error about any key of the hub points at the file and line the value came from, and so that
`hubfleet render --explain HUB` can say it for every setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, SecretStr

from hubfleet.config.defaults import Path, merge_tracked
from hubfleet.config.secret_refs import SecretRef
from hubfleet.config.yaml_source import Source, show

BUILT_IN = "built-in default"


@dataclass
class Layer:
    """One layer of a hub's settings: its data and where in which file it starts."""

    name: str
    """One of config.defaults.LAYER_NAMES."""
    source: Source
    data: dict[str, Any]
    prefix: tuple[str, ...] = ("defaults",)
    """Where the layer's settings are in its file: under `defaults`, or at the top (the hub file)."""


@dataclass
class HubLayers:
    """The layers of one hub, lowest last (the hub file). Passed to validation as the hub's source: errors
    land in the file the offending value came from (`where`)."""

    layers: list[Layer]
    _origins: dict[Path, int] | None = field(default=None, repr=False)

    @property
    def hub(self) -> Layer:
        return self.layers[-1]

    @property
    def file(self) -> str:
        return self.hub.source.file

    def first_key(self) -> tuple[int, int]:
        return self.hub.source.first_key()

    def find(self, path: list[str | int]) -> tuple[int, tuple[int, int], tuple[int, int]]:
        _, depth, key_pos, value_pos = self.where(path)
        return depth, key_pos, value_pos

    @property
    def origins(self) -> dict[Path, int]:
        """Path -> index in `layers` of the layer that set it (computed on first use: only errors and
        --explain need it)."""
        if self._origins is None:
            _, self._origins = merge_tracked([layer.data for layer in self.layers])
        return self._origins

    def origin(self, path: Path) -> Layer | None:
        """The layer that set exactly `path`, or None (a built-in default)."""
        index = self.origins.get(tuple(path))
        return None if index is None else self.layers[index]

    def where(self, path: list[str | int]) -> tuple[str, int, tuple[int, int], tuple[int, int]]:
        """(file, depth, key pos, value pos) for `path` of the hub's effective settings: the layer that set
        the longest part of it (the hub file's first key when none did)."""
        origins = self.origins
        for depth in range(len(path), 0, -1):
            index = origins.get(tuple(path[:depth]))
            if index is None:
                continue
            layer = self.layers[index]
            found, key_pos, value_pos = layer.source.find([*layer.prefix, *path[:depth]])
            if found == len(layer.prefix) + depth:
                return layer.source.file, depth, key_pos, value_pos
        first = self.first_key()
        return self.file, 0, first, first

    def locate(self, dotted_path: str) -> tuple[str, int, int]:
        """(file, line, col) of the key `dotted_path` (`auth.admin_users`, `kubernetes.profiles.1.slug`)."""
        file, _, key_pos, _ = self.where(self.split(dotted_path))
        return (file, *key_pos)

    def split(self, dotted_path: str) -> list[str | int]:
        """`dotted_path` as a path of keys, keys with dots in them (`fleet.example.org/a`) kept whole when the
        layers set such a key."""
        parts = dotted_path.split(".")
        origins = self.origins
        path: list[str | int] = []
        i = 0
        while i < len(parts):
            for j in range(len(parts), i, -1):
                key = ".".join(parts[i:j])
                elem: str | int = int(key) if key.isdigit() else key
                if j == i + 1 or (*path, elem) in origins:
                    path.append(elem)
                    i = j
                    break
        return path


# --------------------------------------------------------------------------- --explain


@dataclass(frozen=True)
class Explained:
    """One effective setting of a hub and where it came from."""

    path: str
    value: str
    layer: str
    """One of config.defaults.LAYER_NAMES, or BUILT_IN."""
    where: str
    """file:line, or "" for a built-in default."""


def explain(layers: HubLayers, hub: BaseModel) -> list[Explained]:
    """Every effective setting of `hub` (leaves; a list as one value), with the layer and file:line it came
    from. Secret values are never shown: a SecretStr as ***, a reference as {secret: KEY}."""
    rows = []
    for path, value in _leaves(hub, ()):
        layer = layers.origin(path)
        if layer is None:
            rows.append(Explained(_dotted(path), _show(value), BUILT_IN, ""))
            continue
        _, key_pos, _ = layer.source.find([*layer.prefix, *path])
        rows.append(Explained(_dotted(path), _show(value), layer.name, f"{layer.source.file}:{key_pos[0]}"))
    return rows


def _leaves(value: Any, path: Path) -> Iterator[tuple[Path, Any]]:
    if isinstance(value, BaseModel) and not isinstance(value, SecretRef):
        for name in type(value).model_fields:
            yield from _leaves(getattr(value, name), (*path, name))
    elif isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, (*path, str(key)))
    else:
        yield path, value


def _dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)


def _show(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "***"
    if isinstance(value, SecretRef):
        return f"{{secret: {value.secret}}}"
    if isinstance(value, BaseModel):
        return str(value.model_dump(mode="json"))
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}"
    text = show(value)
    return text.replace("\n", "\\n")


def format_explained(rows: list[Explained]) -> str:
    """The rows as aligned text: setting, value, layer, file:line."""
    if not rows:
        return ""
    width = min(48, max(len(r.path) for r in rows))
    value_width = min(40, max(len(r.value) for r in rows))
    lines = []
    for row in rows:
        value = row.value if len(row.value) <= 60 else row.value[:57] + "..."
        origin = f"{row.layer} ({row.where})" if row.where else row.layer
        lines.append(f"{row.path:<{width}}  {value:<{value_width}}  {origin}".rstrip())
    return "\n".join(lines) + "\n"


def explain_hub(config: Any, hub: BaseModel) -> str:
    """`hubfleet render --explain`: the layers of `hub` (a hub of the SourcedFleetConfig `config`), then
    every effective setting with where it came from."""
    entry = next(e for e in config.hub_entries if e.hub is hub)
    layers: HubLayers = entry.layers
    head = [f"# settings of hub {getattr(hub, 'name', '')!r}, layers in merge order (later wins):"]
    head += [f"#   {layer.name}: {layer.source.file}" for layer in layers.layers]
    return "\n".join(head) + "\n" + format_explained(explain(layers, hub))

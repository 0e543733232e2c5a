"""Load a fleet directory into models, keeping the source position of every key and value.

Each file is parsed with ruamel.yaml in round-trip mode (which records the line and column of every key,
value and list item), converted to plain Python data and validated with the pydantic models. A pydantic
error `loc` is followed back through the models (skipping discriminated-union tags) and the YAML tree to
the offending key or value, so that every error reads `file:line:col: key.path: what to do`.
"""

from __future__ import annotations

import datetime
import difflib
import re
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Tag, TypeAdapter, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import ScalarNode as _RuamelScalarNode
from ruamel.yaml.reader import ReaderError

from hubfleet.config.fleet import ConfigError, FleetConfig, FleetInvalid
from hubfleet.config.models import SECRET_KEY_PATTERN, Cluster, Community, FleetSettings, Hub

YAML_SUFFIXES = (".yaml", ".yml")
MERGED_PER_FIELD = ("resources", "culling", "kubernetes", "anomalies")
"""Merged field by field with fleet.yaml `defaults`; every other key (auth too) is replaced whole."""

SECRET_KEY = re.compile(SECRET_KEY_PATTERN)
_CLUSTER_ADAPTER: TypeAdapter[Any] = TypeAdapter(Cluster)
_yaml = YAML(typ="rt")


# --------------------------------------------------------------------------- the loaded fleet


class Source:
    """One parsed file: its path relative to the fleet, its text and (parsed on first use) its round-trip
    YAML tree, which records the line and column of every key, value and list item."""

    def __init__(self, file: str, text: str, tree: Any = None):
        self.file = file
        self.text = text
        self._tree = tree

    @property
    def tree(self) -> Any:
        if self._tree is None:
            try:
                self._tree = _yaml.load(self.text)
            except Exception:  # the fast parser accepted it; positions degrade to 1:1 rather than fail
                self._tree = {}
        return self._tree

    def first_key(self) -> tuple[int, int]:
        return _node_start(self.tree)

    def find(self, path: Iterable[str | int]) -> tuple[int, tuple[int, int], tuple[int, int]]:
        """Follow `path` as far as the file sets it: (depth reached, key pos, value pos), 1-based."""
        node = self.tree
        key_pos = value_pos = self.first_key()
        depth = 0
        for elem in path:
            if isinstance(node, dict):
                key = _find_key(node, elem)
                if key is _ABSENT:
                    break
                line, col = node.lc.key(key)
                key_pos = (line + 1, col + 1)
                if node[key] is None:  # ruamel puts an empty value on the next line
                    value_pos = key_pos
                else:
                    line, col = node.lc.value(key)
                    value_pos = (line + 1, col + 1)
                node = node[key]
            elif isinstance(node, list) and isinstance(elem, int) and 0 <= elem < len(node):
                line, col = node.lc.item(elem)
                key_pos = value_pos = (line + 1, col + 1)
                node = node[elem]
            else:
                break
            depth += 1
        return depth, key_pos, value_pos


@dataclass
class HubEntry:
    """A hub as loaded from its file (before duplicates are dropped from `FleetConfig.hubs`)."""

    hub: Hub
    source: Source
    directory: str
    """The community directory the file is in."""


@dataclass
class SecretsEntry:
    """A secrets file as loaded: communities/<directory>/secrets/<hub_name>.yaml."""

    hub_name: str
    directory: str
    source: Source
    values: dict[str, str]
    """Key -> armored age ciphertext (only the well-formed entries)."""
    malformed: set[str] = field(default_factory=set)
    """Keys whose value is not age ciphertext (reported; not reported again as missing)."""


@dataclass
class SourcedFleetConfig(FleetConfig):
    """FleetConfig plus what the rules need to point at the right line: every source file and hub entry."""

    fleet_source: Source | None = None
    hub_entries: list[HubEntry] = field(default_factory=list)
    secret_entries: list[SecretsEntry] = field(default_factory=list)
    fleet_secret_entry: SecretsEntry | None = None
    """secrets/fleet.yaml (fleet-level secrets), when the file exists."""
    cluster_files: dict[str, str] = field(default_factory=dict)
    community_files: dict[str, str] = field(default_factory=dict)
    broken_names: set[str] = field(default_factory=set)
    """Names read from files that failed validation: references to them are not reported again."""
    broken_hub_dirs: set[str] = field(default_factory=set)
    """Community directories holding a hub file that failed validation (its stage is unknown)."""

    def locate(self, hub_name: str, dotted_path: str) -> tuple[str, int, int]:
        """Where `dotted_path` of a hub's effective settings comes from: (file, line, col).

        The hub file if it sets the key, else fleet.yaml `defaults` if that sets it, else the nearest
        enclosing key set in the hub file (or its first key).
        """
        entry = next(e for e in self.hub_entries if e.hub.name == hub_name)
        return locate_in(entry.source, self.fleet_source, dotted_path)

    def entry_for_file(self, file: str) -> HubEntry | None:
        return next((e for e in self.hub_entries if e.source.file == file), None)


def locate_in(hub_source: Source, fleet_source: Source | None, dotted_path: str) -> tuple[str, int, int]:
    path = [int(p) if p.isdigit() else p for p in dotted_path.split(".")]
    depth, key_pos, _ = hub_source.find(path)
    if depth == len(path):
        return (hub_source.file, *key_pos)
    hub_sets_top = depth > 0
    if fleet_source is not None and not (hub_sets_top and path[0] not in MERGED_PER_FIELD):
        fdepth, fkey_pos, _ = fleet_source.find(["defaults", *path])
        if fdepth == len(path) + 1:
            return (fleet_source.file, *fkey_pos)
    return (hub_source.file, *key_pos)


# --------------------------------------------------------------------------- public API


def load_fleet(root: Path) -> FleetConfig:
    """Load and validate the fleet in `root`; raise FleetInvalid listing every error."""
    config, errors = validate_fleet(root)
    if errors or config is None:
        raise FleetInvalid(errors)
    return config


def validate_fleet(root: Path | str) -> tuple[SourcedFleetConfig | None, list[ConfigError]]:
    """Load the fleet and run every rule: (the fleet, []) when valid, else (None, every error, sorted)."""
    root = Path(root)
    config, errors = _load(root)
    if config is not None:
        from hubfleet.config.rules import check_rules

        errors.extend(check_rules(config))
    errors = sorted(set(errors))
    return (config if not errors else None), errors


# --------------------------------------------------------------------------- loading


def _load(root: Path) -> tuple[SourcedFleetConfig | None, list[ConfigError]]:
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
        parsed = _parse(root, fleet_file, FleetSettings, errors)
        fleet_source, plain = parsed if parsed is not None else (None, None)
    fleet: FleetSettings | None = None
    defaults: dict[str, Any] = {}
    if fleet_source is not None:
        plain = _plain(fleet_source.tree)
        fleet = _validate(FleetSettings, plain, fleet_source, errors)
        if isinstance(plain.get("defaults"), dict):
            defaults = plain["defaults"]

    config = SourcedFleetConfig(root=root, settings=fleet, fleet_source=fleet_source)  # type: ignore[arg-type]
    _load_clusters(root, config, errors)
    _load_communities(root, config, defaults, errors)
    for entry in config.secret_entries:
        config.secrets.setdefault(entry.hub_name, entry.values)
    if (root / FLEET_SECRETS_FILE).is_file():
        config.fleet_secret_entry = _read_secrets_file(root, root / FLEET_SECRETS_FILE, "", None, errors)
        if config.fleet_secret_entry is not None:
            config.fleet_secrets = dict(config.fleet_secret_entry.values)
    if fleet_source is None:
        # Without fleet.yaml the defaults are unknown: cross-file rules would report noise.
        return None, errors
    return config, errors


def _yaml_files(directory: Path) -> list[Path]:
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return []
    return [
        p
        for p in entries
        if not p.name.startswith(".") and p.suffix in YAML_SUFFIXES and (p.is_file() or p.is_symlink())
    ]


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _load_clusters(root: Path, config: SourcedFleetConfig, errors: list[ConfigError]) -> None:
    found = 0
    for path in _yaml_files(root / "clusters"):
        found += 1
        parsed = _parse(root, path, Cluster, errors)
        if parsed is None:
            continue
        source, plain = parsed
        cluster = _validate(Cluster, plain, source, errors)
        if cluster is None:
            _remember_name(config, plain)
            continue
        if cluster.name in config.clusters:
            errors.append(
                _at_value(
                    source,
                    "name",
                    f"name: cluster '{cluster.name}' is already defined in "
                    f"{config.cluster_files[cluster.name]}; cluster names must be unique",
                )
            )
            continue
        config.clusters[cluster.name] = cluster
        config.cluster_files[cluster.name] = source.file
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
    root: Path, config: SourcedFleetConfig, defaults: dict[str, Any], errors: list[ConfigError]
) -> None:
    communities_dir = root / "communities"
    try:
        entries = sorted(p for p in communities_dir.iterdir() if not p.name.startswith("."))
    except OSError:
        entries = []
    for directory in entries:
        if not directory.is_dir():
            if directory.suffix in YAML_SUFFIXES:
                errors.append(
                    ConfigError(
                        _rel(root, directory),
                        1,
                        1,
                        "files here are ignored; a community is a directory: "
                        "move this to communities/<name>/community.yaml",
                    )
                )
            continue
        _load_community(root, directory, config, defaults, errors)


def _load_community(
    root: Path,
    directory: Path,
    config: SourcedFleetConfig,
    defaults: dict[str, Any],
    errors: list[ConfigError],
) -> None:
    name = directory.name
    community_file = directory / "community.yaml"
    if not community_file.is_file():
        alt = directory / "community.yml"
        community_file = alt if alt.is_file() else community_file
    if not community_file.is_file():
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
        parsed = _parse(root, community_file, Community, errors)
        community = None
        source = None
        if parsed is not None:
            source, plain = parsed
            community = _validate(Community, plain, source, errors)
            if community is not None and community.name != name:
                errors.append(
                    _at_value(
                        source,
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

    for path in _yaml_files(directory):
        if path.stem != "community":
            errors.append(
                ConfigError(
                    _rel(root, path),
                    1,
                    1,
                    f"files here are ignored; put hub files in communities/{name}/hubs/",
                )
            )
    for path in _yaml_files(directory / "hubs"):
        parsed = _parse(root, path, Hub, errors)
        if parsed is None:
            continue
        source, plain = parsed
        hub = _validate(Hub, merge_defaults(defaults, plain), source, errors, drop_outside=True)
        if hub is None:
            _remember_name(config, plain)
            config.broken_hub_dirs.add(name)
            continue
        config.hub_entries.append(HubEntry(hub=hub, source=source, directory=name))
        if hub.name not in config.hubs:
            config.hubs[hub.name] = hub
            config.hub_files[hub.name] = Path(source.file)
    for path in _yaml_files(directory / "secrets"):
        _load_secrets_file(root, path, name, config, errors)


_ARMOR_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----"
_ARMOR_END = "-----END AGE ENCRYPTED FILE-----"
_ARMOR_BODY = re.compile(r"[A-Za-z0-9+/=\s]*")


def is_armored_age(value: Any) -> bool:
    """Whether `value` looks like ASCII-armored age ciphertext (checked without any key)."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    return (
        text.startswith(_ARMOR_BEGIN)
        and text.endswith(_ARMOR_END)
        and len(text) > len(_ARMOR_BEGIN) + len(_ARMOR_END)
        and _ARMOR_BODY.fullmatch(text[len(_ARMOR_BEGIN) : -len(_ARMOR_END)]) is not None
    )


FLEET_SECRETS_FILE = "secrets/fleet.yaml"
"""Fleet-level secrets (alert channels), same format as the hub secrets files."""


def _load_secrets_file(
    root: Path, path: Path, community: str, config: SourcedFleetConfig, errors: list[ConfigError]
) -> None:
    """communities/<community>/secrets/<hub>.yaml: a mapping of KEY -> armored age ciphertext."""
    entry = _read_secrets_file(root, path, community, path.stem, errors)
    if entry is not None:
        config.secret_entries.append(entry)


def _read_secrets_file(
    root: Path, path: Path, community: str, hub_name: str | None, errors: list[ConfigError]
) -> SecretsEntry | None:
    """A secrets file (hub_name None: the fleet-level secrets/fleet.yaml): KEY -> armored age ciphertext.
    Messages never quote a value: a value that is not ciphertext may be a secret written in clear."""
    set_cmd = f"hubfleet secrets set {hub_name}" if hub_name else "hubfleet secrets set --fleet-level"
    try:
        blank = all(not ln.strip() or ln.lstrip().startswith("#") for ln in path.read_text().splitlines())
    except (OSError, UnicodeDecodeError):
        blank = False
    if blank:
        return SecretsEntry(hub_name or "", community, Source(_rel(root, path), ""), {})
    parsed = _parse(root, path, "keys set with `hubfleet secrets set`", errors)
    if parsed is None:
        return None
    source, plain = parsed
    values: dict[str, str] = {}
    malformed: set[str] = set()
    for key, value in plain.items():
        if not SECRET_KEY.fullmatch(key):
            _, key_pos, _ = source.find([key])
            errors.append(
                ConfigError(
                    source.file,
                    *key_pos,
                    f"{_show(key)} is not a valid secret key; use lower-case letters, digits and '_'",
                )
            )
        elif not is_armored_age(value):
            malformed.add(key)
            _, _, value_pos = source.find([key])
            errors.append(
                ConfigError(
                    source.file,
                    *value_pos,
                    f"{key}: expected an age-encrypted value (-----BEGIN AGE ENCRYPTED FILE-----); "
                    f"never write a secret in clear: run `{set_cmd} {key}`",
                )
            )
        else:
            values[key] = value
    return SecretsEntry(hub_name or "", community, source, values, malformed)


def _remember_name(config: SourcedFleetConfig, plain: Any) -> None:
    if isinstance(plain, dict) and isinstance(plain.get("name"), str):
        config.broken_names.add(plain["name"])


def merge_defaults(defaults: dict[str, Any], hub: Any) -> Any:
    """The hub's effective settings: the hub file over fleet.yaml `defaults`.

    A key set in the hub file wins; `resources`, `culling` and `kubernetes` merge field by field; `auth` is
    replaced whole.
    """
    if not isinstance(hub, dict) or not defaults:
        return hub
    merged = dict(defaults)
    for key, value in hub.items():
        base = merged.get(key)
        if key in MERGED_PER_FIELD and isinstance(base, dict) and isinstance(value, dict):
            merged[key] = {**base, **value}
        else:
            merged[key] = value
    return merged


# --------------------------------------------------------------------------- parsing


def _parse(root: Path, path: Path, model: Any, errors: list[ConfigError]) -> tuple[Source, Any] | None:
    """Parse one YAML file into (its Source, plain data); on any problem append one ConfigError, return None.

    Files go through the libyaml fast path when it can reproduce exactly what ruamel.yaml (YAML 1.2) would
    load; anything unusual or wrong is parsed by ruamel.yaml, whose round-trip tree gives the positions.
    """
    rel = _rel(root, path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        errors.append(ConfigError(rel, 1, 1, f"cannot read file: {exc.strerror or exc}"))
        return None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        errors.append(ConfigError(rel, line, col, "file is not UTF-8 text; save it as UTF-8"))
        return None
    fast = fast_load(text)
    if isinstance(fast, dict):
        return Source(rel, text), fast
    try:
        tree = _yaml.load(text)
    except MarkedYAMLError as exc:
        errors.append(_yaml_error(rel, exc))
        return None
    except ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        errors.append(
            ConfigError(
                rel, line, col, f"invalid YAML: character {exc.character!r} is not allowed; remove it"
            )
        )
        return None
    except (YAMLError, RecursionError, ValueError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        errors.append(ConfigError(rel, 1, 1, f"invalid YAML: {first}"))
        return None
    if tree is None:
        errors.append(
            ConfigError(rel, 1, 1, f"file is empty; expected a mapping with {_required_keys(model)}")
        )
        return None
    if not isinstance(tree, dict):
        line, col = _node_start(tree)
        errors.append(
            ConfigError(
                rel,
                line,
                col,
                f"expected a mapping with {_required_keys(model)} at the top level, got {_kind(tree)}",
            )
        )
        return None
    return Source(rel, text, tree), _plain(tree)


# --------------------------------------------------------------------------- the libyaml fast path

try:
    import yaml as _pyyaml

    _CSafeLoader = _pyyaml.CSafeLoader
except (ImportError, AttributeError):  # no PyYAML or no libyaml: ruamel.yaml parses everything
    _pyyaml = None

_PLAIN = "?plain"
_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_SIMPLE_INT = re.compile(r"[-+]?[0-9]+")
_SIMPLE_FLOAT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
_RESOLVER = _yaml.resolver


class _Unusual(Exception):
    """The fast path cannot reproduce ruamel.yaml's result for this file."""


if _pyyaml is not None:

    class _FastLoader(_CSafeLoader):  # type: ignore[misc,valid-type]
        def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
            if kind is _pyyaml.ScalarNode:
                return _PLAIN if implicit[0] else _STR
            return super().resolve(kind, value, implicit)


def fast_load(text: str) -> Any:
    """Plain data for `text` exactly as ruamel.yaml (YAML 1.2) would load it, using libyaml's C parser;
    None when the text is empty, invalid or unusual (duplicate keys, tags, merge keys, timestamps...):
    the caller then parses it with ruamel.yaml."""
    if _pyyaml is None:
        return None
    loader = _FastLoader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else _construct(node)
    except (_Unusual, _pyyaml.YAMLError, RecursionError, ValueError):
        return None
    finally:
        loader.dispose()


def _construct(node: Any) -> Any:
    tag = node.tag
    if tag == _PLAIN:
        return _scalar(node.value)
    if tag == _STR:
        return node.value
    if tag == _MAP:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag != _STR and key_node.tag != _PLAIN:
                raise _Unusual
            key = _construct(key_node)
            key = key if type(key) is str else _show(key)
            if key in out or (key == "<<" and key_node.tag == _PLAIN):
                raise _Unusual
            out[key] = _construct(value_node)
        return out
    if tag == _SEQ:
        return [_construct(item) for item in node.value]
    raise _Unusual


def _scalar(value: str) -> Any:
    tag = _RESOLVER.resolve(_RuamelScalarNode, value, (True, False))
    if tag == _STR:
        return value
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool":
        return value.lower() == "true"
    if tag == "tag:yaml.org,2002:int" and _SIMPLE_INT.fullmatch(value):
        return int(value)
    if tag == "tag:yaml.org,2002:float" and _SIMPLE_FLOAT.fullmatch(value):
        return float(value)
    raise _Unusual


_DUPLICATE = re.compile(r'found duplicate key "(.*?)"')


def _yaml_error(rel: str, exc: MarkedYAMLError) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = (exc.problem or exc.context or "syntax error").strip()
    dup = _DUPLICATE.search(problem)
    if dup:
        return ConfigError(rel, line, col, f"duplicate key '{dup.group(1)}'; keep only one of them")
    context = f" ({exc.context.strip()})" if exc.context and exc.problem else ""
    return ConfigError(rel, line, col, f"invalid YAML: {problem}{context}")


def _node_start(node: Any) -> tuple[int, int]:
    lc = getattr(node, "lc", None)
    if lc is not None and lc.line is not None:
        return lc.line + 1, lc.col + 1
    return 1, 1


def _plain(node: Any) -> Any:
    """The round-trip tree as plain dict/list/str/int/float/bool (fast to validate, no ruamel subclasses)."""
    if isinstance(node, dict):
        return {(k if type(k) is str else _key_str(k)): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, str):
        return node if type(node) is str else str(node)
    if isinstance(node, int):
        # ruamel's ScalarBoolean is an int subclass.
        return bool(node) if type(node).__name__ == "ScalarBoolean" else int(node)
    if isinstance(node, float):
        return float(node)
    return node


def _key_str(key: Any) -> str:
    if isinstance(key, str):
        return str(key)
    return _show(key)


_ABSENT = object()


def _find_key(node: dict[Any, Any], elem: str | int) -> Any:
    if elem in node:
        return elem
    for key in node:
        if _key_str(key) == elem:
            return key
    return _ABSENT


# --------------------------------------------------------------------------- pydantic errors -> ConfigError


def _validate(
    model: Any, data: Any, source: Source, errors: list[ConfigError], drop_outside: bool = False
) -> Any:
    """Validate plain data; on failure append one ConfigError per pydantic error and return None.

    drop_outside: skip errors whose key is not in this file (they come from fleet.yaml `defaults`, which
    is validated and reported on its own).
    """
    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model.model_validate(data)
        return _CLUSTER_ADAPTER.validate_python(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            converted = _convert(model, err, source, drop_outside)
            if converted is not None:
                errors.append(converted)
        return None


def _convert(model: Any, err: Any, source: Source, drop_outside: bool) -> ConfigError | None:
    kind = err["type"]
    path, holder, leaf, on_key = _resolve(model, err["loc"])
    dotted = dotted_path(path)
    if kind == "missing":
        depth, key_pos, _ = source.find(path[:-1])
        if depth < len(path) - 1:
            if drop_outside:
                return None
            key_pos = source.first_key() if depth == 0 else key_pos
        return ConfigError(source.file, *key_pos, f"{dotted}: required key missing{_hint_for(leaf)}")
    if kind == "union_tag_not_found":
        depth, key_pos, _ = source.find(path)
        if drop_outside and depth < len(path):
            return None
        tag, tags = _tags(leaf)
        tag_path = dotted_path([*path, tag])
        return ConfigError(
            source.file, *key_pos, f"{tag_path}: required key missing; one of: {', '.join(tags)}"
        )
    if kind == "union_tag_invalid":
        tag, tags = _tags(leaf)
        depth, _, value_pos = source.find([*path, tag])
        if drop_outside and depth < len(path) + 1:
            return None
        value = err.get("ctx", {}).get("tag")
        return ConfigError(
            source.file,
            *value_pos,
            f"{dotted_path([*path, tag])}: '{value}' is not one of: {', '.join(tags)}",
        )
    depth, key_pos, value_pos = source.find(path)
    if drop_outside and depth < len(path):
        return None
    if kind == "extra_forbidden" or on_key:
        allowed = list(holder.model_fields) if _is_model(holder) else []
        name = str(path[-1]) if path else ""
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        if close:
            hint = f"did you mean '{close[0]}'?"
        elif allowed:
            hint = f"allowed keys: {', '.join(allowed)}"
        else:
            hint = "remove it"
        return ConfigError(source.file, *key_pos, f"{dotted}: unknown key; {hint}")
    message = _message(err, leaf)
    return ConfigError(source.file, *value_pos, f"{dotted}: {message}" if dotted else message)


def dotted_path(path: Iterable[str | int]) -> str:
    out = ""
    for elem in path:
        if isinstance(elem, int):
            out += f"[{elem}]"
        else:
            part = elem if _SIMPLE_KEY.fullmatch(str(elem)) else _show(str(elem))
            out += f".{part}" if out else part
    return out


_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional; a union of several models is returned as is."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _union_models(tp: Any) -> list[type[BaseModel]]:
    if get_origin(tp) in (Union, types.UnionType):
        return [m for m in (_unwrap(a) for a in get_args(tp)) if _is_model(m)]
    return []


def _tags(tp: Any) -> tuple[str, list[str]]:
    """The discriminator key of a union of models and its allowed values."""
    members = _union_models(_unwrap(tp))
    if not members:
        return "type", []
    for name, info in members[0].model_fields.items():
        if get_origin(info.annotation) is Literal and all(
            name in m.model_fields and get_origin(m.model_fields[name].annotation) is Literal for m in members
        ):
            return name, [str(v) for m in members for v in get_args(m.model_fields[name].annotation)]
    return "type", []


def _resolve(model: Any, loc: tuple[Any, ...]) -> tuple[list[str | int], Any, Any, bool]:
    """Follow a pydantic loc through the types: (YAML path without union tags, model holding the last key,
    type of the last element, whether the error is about a mapping key rather than its value)."""
    tp: Any = model
    holder: Any = None
    path: list[str | int] = []
    on_key = False
    for elem in loc:
        tp = _unwrap(tp)
        tagged = _tagged_member(tp, elem)
        if tagged is not None:  # a union with a callable discriminator: its tag is not in the YAML
            tp = tagged
            continue
        members = _union_models(tp)
        if members:
            tag, _ = _tags(tp)
            chosen = (
                next(
                    (m for m in members if elem in get_args(m.model_fields[tag].annotation)),
                    None,
                )
                if tag in members[0].model_fields
                else None
            )
            if chosen is not None:
                tp = chosen
                continue
        if _is_model(tp):
            holder = tp
            info = tp.model_fields.get(elem) if isinstance(elem, str) else None
            tp = info.annotation if info is not None else None
            path.append(elem)
        elif elem == "[key]":
            on_key = True
        else:
            origin = get_origin(tp)
            args = get_args(tp)
            if origin is list and args:
                tp = args[0]
            elif origin is dict and len(args) == 2:
                tp = args[1]
            else:
                tp = None
            holder = None
            path.append(elem)
    return path, holder, tp, on_key


def _tagged_member(tp: Any, elem: Any) -> Any:
    if get_origin(tp) not in (Union, types.UnionType):
        return None
    for member in get_args(tp):
        if get_origin(member) is Annotated and any(
            isinstance(m, Tag) and m.tag == elem for m in get_args(member)[1:]
        ):
            return get_args(member)[0]
    return None


def _hint_for(tp: Any) -> str:
    tp = _unwrap(tp)
    if get_origin(tp) is Literal:
        return f"; one of: {', '.join(str(v) for v in get_args(tp))}"
    tag, tags = _tags(tp)
    if tags:
        return f"; a mapping with `{tag}:` one of {', '.join(tags)}"
    return ""


def _required_keys(model: Any) -> str:
    if isinstance(model, str):
        return model
    if _is_model(model):
        names = [n for n, f in model.model_fields.items() if f.is_required()]
    else:
        members = _union_models(_unwrap(model))
        names = [n for n, f in members[0].model_fields.items() if f.is_required()] if members else []
    return "keys " + ", ".join(names) if names else "keys"


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{_show(value)} (a boolean)"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"text ({_show(value)})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, datetime.date):
        return "a date; quote it"
    return f"a {type(value).__name__}"


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        short = value if len(value) <= 60 else value[:57] + "..."
        return "'" + _CONTROL.sub(lambda m: repr(m.group())[1:-1], short) + "'"
    return str(value)


_PATTERN_HINTS = {
    r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$": "is not a valid name; use 1-63 lower-case letters, digits "
    "and '-', starting and ending with a letter or digit",
    r"^[^@\s]+@[^@\s]+\.[^@\s]+$": "is not an email address",
    r"^[^\s/]+$": "is not a valid username; no spaces or '/'",
    r"^\d{12}$": "is not an AWS account id; write its 12 digits",
    SECRET_KEY_PATTERN: "is not a valid secret key; use lower-case letters, digits and '_'",
    r"^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$": "is not a domain name such as hub.example.org",
}

_TYPE_WORDS = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _message(err: Any, leaf: Any) -> str:
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}, got {_kind(value)}"
    if kind == "literal_error":
        allowed = [str(v) for v in get_args(_unwrap(leaf))] if get_origin(_unwrap(leaf)) is Literal else []
        choices = ", ".join(allowed) if allowed else str(ctx.get("expected", ""))
        return f"{_show(value)} is not one of: {choices}"
    if kind == "string_pattern_mismatch":
        hint = _PATTERN_HINTS.get(str(ctx.get("pattern")), f"does not match the pattern {ctx.get('pattern')}")
        return f"{_show(value)} {hint}"
    if kind == "string_too_short":
        return (
            "must not be empty"
            if ctx.get("min_length") == 1
            else f"must be at least {ctx['min_length']} long"
        )
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("greater than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        limit = ctx.get(key)
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)
        return f"must be {words} {limit}, got {_show(value)}"
    if kind in ("value_error", "assertion_error"):
        text = str(ctx.get("error") or err.get("msg", ""))
        return text.removeprefix("Value error, ")
    if kind == "missing":
        return "required key missing"
    return f"{err.get('msg', 'invalid value')} (got {_kind(value)})"


def _at_value(source: Source, key: str, message: str) -> ConfigError:
    _, _, value_pos = source.find([key])
    return ConfigError(source.file, *value_pos, message)

"""Reading a YAML file so that any of its keys and values can later be pointed at by `file:line:col`.

Validating 500 hub files must stay fast, and positions are needed only for the few files with an error. So a
file is parsed by libyaml's C parser whenever that reproduces exactly what ruamel.yaml (YAML 1.2) would load;
ruamel.yaml's round-trip tree, which records the line and column of every key, value and list item, is built
only for files the fast path declines, or on first use of `Source.tree` when an error needs a position.
Syntax errors become one `ConfigError` each, at the place a user has to fix.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml as pyyaml
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import ScalarNode as RuamelScalarNode
from ruamel.yaml.reader import ReaderError

from hubfleet.config.fleet import ConfigError

if TYPE_CHECKING:
    from hubfleet.config.cache import FleetCache

YAML_SUFFIXES = (".yaml", ".yml")

_yaml = YAML(typ="rt")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ABSENT = object()


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
        return node_start(self.tree)

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

    def at_value(self, key: str, message: str) -> ConfigError:
        """An error at the value of top-level `key`."""
        _, _, value_pos = self.find([key])
        return ConfigError(self.file, *value_pos, message)


def relative(root: Path, path: Path | str) -> str:
    """A file's name as errors show it: relative to the fleet directory, with '/'."""
    text, top = os.fspath(path), os.fspath(root)
    if text.startswith(top + os.sep) and os.sep == "/":  # the common case, without pathlib's parsing
        return text[len(top) + 1 :]
    return Path(path).relative_to(root).as_posix()


def yaml_files(directory: Path) -> list[Path]:
    """The YAML files of `directory`, sorted, hidden ones (editor swap files, .git) left out."""
    try:
        with os.scandir(directory) as found:
            entries = sorted(
                (e.name, e.is_file() or e.is_symlink())
                for e in found
                if not e.name.startswith(".") and e.name.endswith(YAML_SUFFIXES)
            )
    except OSError:
        return []
    return [directory / name for name, is_file in entries if is_file]


def read_yaml(
    root: Path, path: Path | str, expected: str, errors: list[ConfigError], cache: FleetCache | None = None
) -> tuple[Source, Any] | None:
    """Parse one YAML file into (its Source, plain data); on any problem append one ConfigError, return None.

    `expected` says what the top-level mapping holds ("keys name, kind"), for a file that is empty or not a
    mapping. Files go through the libyaml fast path when it can reproduce exactly what ruamel.yaml (YAML 1.2)
    would load; anything unusual or wrong is parsed by ruamel.yaml, whose round-trip tree gives the positions.
    With a `cache`, a file whose bytes were parsed by the fast path before is not parsed again.
    """
    rel = relative(root, path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
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
    key = None
    if cache is not None:
        key, cached = cache.parsed(rel, raw)
        if isinstance(cached, dict):
            return Source(rel, text), cached
    fast = fast_load(text)
    if isinstance(fast, dict):
        if cache is not None and key is not None:
            cache.remember_parsed(key, fast)
        return Source(rel, text), fast
    try:
        tree = _yaml.load(text)
    except MarkedYAMLError as exc:
        errors.append(_yaml_error(rel, text, exc))
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
        errors.append(ConfigError(rel, 1, 1, f"file is empty; expected a mapping with {expected}"))
        return None
    if not isinstance(tree, dict):
        line, col = node_start(tree)
        errors.append(
            ConfigError(
                rel,
                line,
                col,
                f"expected a mapping with {expected} at the top level, got {describe(tree)}",
            )
        )
        return None
    return Source(rel, text, tree), plain_data(tree)


# --------------------------------------------------------------------------- syntax errors

_DUPLICATE = re.compile(r'found duplicate key "(.*?)"')
_NEVER_CLOSED = {
    # (ruamel's context, how its problem starts): what was left open, and what closes it (None: its quote)
    ("while parsing a flow sequence", "expected ',' or ']'"): ("list", "]"),
    ("while parsing a flow mapping", "expected ',' or '}'"): ("mapping", "}"),
    ("while scanning a quoted scalar", "found unexpected end of stream"): ("string", None),
    ("while scanning a quoted scalar", "found unexpected document separator"): ("string", None),
}


def _yaml_error(rel: str, text: str, exc: MarkedYAMLError) -> ConfigError:
    unclosed = _unclosed(text, exc)
    if unclosed is not None:
        return ConfigError(rel, *unclosed)
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = (exc.problem or exc.context or "syntax error").strip()
    dup = _DUPLICATE.search(problem)
    if dup:
        return ConfigError(rel, line, col, f"duplicate key '{dup.group(1)}'; keep only one of them")
    context = f" ({exc.context.strip()})" if exc.context and exc.problem else ""
    return ConfigError(rel, line, col, f"invalid YAML: {problem}{context}")


def _unclosed(text: str, exc: MarkedYAMLError) -> tuple[int, int, str] | None:
    """A list, mapping or quoted string left open: (line, col, message) at where it begins, since the
    parser gives up only lines later, on a line that is not wrong. None for any other error."""
    begun, stopped = exc.context_mark, exc.problem_mark
    if begun is None or stopped is None or begun.line == stopped.line:
        return None
    context, problem = (exc.context or "").strip(), (exc.problem or "").strip()
    found = next((v for (c, p), v in _NEVER_CLOSED.items() if c == context and problem.startswith(p)), None)
    if found is None:
        return None
    what, closer = found
    if closer is None:
        lines = text.splitlines()
        opening = lines[begun.line][begun.column : begun.column + 1] if begun.line < len(lines) else ""
        closer = opening if opening in ("'", '"') else "'"
    if "end of stream" in problem or "<stream end>" in problem:
        where = "the parser reached the end of the file"
    else:
        where = f"the parser stopped at line {stopped.line + 1}: {problem}"
    return (
        begun.line + 1,
        begun.column + 1,
        f"invalid YAML: this {what} is never closed; add the missing `{closer}` ({where})",
    )


# --------------------------------------------------------------------------- the round-trip tree


def node_start(node: Any) -> tuple[int, int]:
    """Where a node of the round-trip tree starts (1-based); 1:1 for a scalar, which has no position."""
    lc = getattr(node, "lc", None)
    if lc is not None and lc.line is not None:
        return lc.line + 1, lc.col + 1
    return 1, 1


def plain_data(node: Any) -> Any:
    """The round-trip tree as plain dict/list/str/int/float/bool (fast to validate, no ruamel subclasses)."""
    if isinstance(node, dict):
        return {(k if type(k) is str else key_text(k)): plain_data(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain_data(v) for v in node]
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


def key_text(key: Any) -> str:
    """A mapping key as text: a key such as `1` or `true` is spelt as the user wrote it."""
    if isinstance(key, str):
        return str(key)
    return show(key)


def _find_key(node: dict[Any, Any], elem: str | int) -> Any:
    if elem in node:
        return elem
    for key in node:
        if key_text(key) == elem:
            return key
    return _ABSENT


# --------------------------------------------------------------------------- values in messages


def show(value: Any) -> str:
    """A value as the user wrote it in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        short = value if len(value) <= 60 else value[:57] + "..."
        return "'" + _CONTROL.sub(lambda m: repr(m.group())[1:-1], short) + "'"
    return str(value)


def describe(value: Any) -> str:
    """What kind of value the user wrote, for "expected X, got Y"."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{show(value)} (a boolean)"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"text ({show(value)})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, datetime.date):
        return "a date; quote it"
    return f"a {type(value).__name__}"


# --------------------------------------------------------------------------- the libyaml fast path

_CSafeLoader = getattr(pyyaml, "CSafeLoader", None)  # None: PyYAML built without libyaml
_PLAIN = "?plain"
_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_SIMPLE_INT = re.compile(r"[-+]?[0-9]+")
_SIMPLE_FLOAT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
_RESOLVER = _yaml.resolver


class _Unusual(Exception):
    """The fast path cannot reproduce ruamel.yaml's result for this file."""


if _CSafeLoader is not None:

    class _FastLoader(_CSafeLoader):  # type: ignore[misc,valid-type]
        def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
            if kind is pyyaml.ScalarNode:
                return _PLAIN if implicit[0] else _STR
            return super().resolve(kind, value, implicit)


def fast_load(text: str) -> Any:
    """Plain data for `text` exactly as ruamel.yaml (YAML 1.2) would load it, using libyaml's C parser;
    None when the text is empty, invalid or unusual (duplicate keys, tags, merge keys, timestamps...):
    the caller then parses it with ruamel.yaml."""
    if _CSafeLoader is None:
        return None
    loader = _FastLoader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else _construct(node)
    except (_Unusual, pyyaml.YAMLError, RecursionError, ValueError):
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
            key = key if type(key) is str else show(key)
            if key in out or (key == "<<" and key_node.tag == _PLAIN):
                raise _Unusual
            out[key] = _construct(value_node)
        return out
    if tag == _SEQ:
        return [_construct(item) for item in node.value]
    raise _Unusual


def _scalar(value: str) -> Any:
    tag = _plain_tag(value)
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


_TAGS: dict[str, str] = {}
_TAGS_MAX = 100_000


def _plain_tag(value: str) -> str:
    """ruamel.yaml's tag for a plain scalar, remembered: the same keys and values recur in every hub file,
    and ruamel's resolver was a third of the time a 5,000-hub fleet took to parse."""
    tag = _TAGS.get(value)
    if tag is None:
        tag = str(_RESOLVER.resolve(RuamelScalarNode, value, (True, False)))
        if len(_TAGS) < _TAGS_MAX:
            _TAGS[value] = tag
    return tag

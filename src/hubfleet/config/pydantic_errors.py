"""Validation of one file's data against its model, with pydantic's errors turned into `file:line:col` lines.

pydantic reports where an error is as a `loc` through the model (including discriminated-union tags that are
not in the YAML) and what is wrong in its own words. Users need the line to edit and what to write instead:
the `loc` is followed back through the types and the YAML tree to the offending key or value, and each error
kind gets a message of its own (unknown keys suggest the closest allowed key).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

from hubfleet.config.fields import pattern_hint
from hubfleet.config.fleet import ConfigError
from hubfleet.config.introspect import discriminator, is_model, tagged_member, union_models, unwrap
from hubfleet.config.yaml_source import Source, describe, show
from hubfleet.suggest import suggestion

_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_adapters: dict[int, TypeAdapter[Any]] = {}


def validate_model(
    model: Any,
    data: Any,
    source: Source,
    errors: list[ConfigError],
    drop_outside: bool = False,
    partial: str | None = None,
) -> Any:
    """Validate plain data; on failure append one ConfigError per pydantic error and return None.

    `model` is a model class or an annotated union of models (such as `Cluster`). drop_outside: skip errors
    whose key is not in this file (they come from fleet.yaml `defaults`, which is validated and reported on
    its own). partial: the top-level key of a layer of defaults (`defaults`), whose mappings may leave out
    required keys (and an auth block its `type`) for a later layer to give; errors about them are skipped
    outside lists. `source` may be
    any object with Source's `file`, `find` and `first_key`; one with a `where(path)` method (the layers of a
    hub) says itself which file holds a path.
    """
    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model.model_validate(data)
        adapter = _adapters.get(id(model))
        if adapter is None:
            adapter = _adapters[id(model)] = TypeAdapter(model)
        return adapter.validate_python(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            if partial is not None and _left_to_a_later_layer(model, err, partial):
                continue
            converted = _convert(model, err, source, drop_outside)
            if converted is not None:
                errors.append(converted)
        return None


def required_keys(model: Any) -> str:
    """The required keys of a file kind, as in "expected a mapping with keys name, kind"."""
    if is_model(model):
        names = [n for n, f in model.model_fields.items() if f.is_required()]
    else:
        members = union_models(unwrap(model))
        names = [n for n, f in members[0].model_fields.items() if f.is_required()] if members else []
    return "keys " + ", ".join(names) if names else "keys"


def dotted_path(path: Iterable[str | int]) -> str:
    """A YAML path as messages show it: `auth.admin_users[1]`."""
    out = ""
    for elem in path:
        if isinstance(elem, int):
            out += f"[{elem}]"
        else:
            part = elem if _SIMPLE_KEY.fullmatch(str(elem)) else show(str(elem))
            out += f".{part}" if out else part
    return out


def _left_to_a_later_layer(model: Any, err: Any, under: str) -> bool:
    """A required key (or tag) missing from a mapping under `under` that a later layer may complete (not
    from a list item: lists are replaced whole)."""
    if err["type"] not in ("missing", "union_tag_not_found"):
        return False
    path, _, _, _ = _resolve(model, err["loc"])
    return len(path) > 1 and path[0] == under and not any(isinstance(p, int) for p in path)


def _where(source: Any, path: list[str | int]) -> tuple[str, int, tuple[int, int], tuple[int, int]]:
    """(file, depth reached, key pos, value pos) of `path`: Source.find in one file, or where the layers of a
    hub say it comes from."""
    where = getattr(source, "where", None)
    if where is not None:
        return where(path)  # type: ignore[no-any-return]
    depth, key_pos, value_pos = source.find(path)
    return source.file, depth, key_pos, value_pos


def _convert(model: Any, err: Any, source: Source, drop_outside: bool) -> ConfigError | None:
    kind = err["type"]
    path, holder, leaf, on_key = _resolve(model, err["loc"])
    dotted = dotted_path(path)
    if kind == "missing":
        file, depth, key_pos, _ = _where(source, path[:-1])
        if depth < len(path) - 1:
            if drop_outside:
                return None
            key_pos = source.first_key() if depth == 0 else key_pos
        return ConfigError(file, *key_pos, f"{dotted}: required key missing{_hint_for(leaf)}")
    if kind == "union_tag_not_found":
        file, depth, key_pos, _ = _where(source, path)
        if drop_outside and depth < len(path):
            return None
        tag, tags = discriminator(leaf)
        tag_path = dotted_path([*path, tag])
        return ConfigError(file, *key_pos, f"{tag_path}: required key missing; one of: {', '.join(tags)}")
    if kind == "union_tag_invalid":
        tag, tags = discriminator(leaf)
        file, depth, _, value_pos = _where(source, [*path, tag])
        if drop_outside and depth < len(path) + 1:
            return None
        value = err.get("ctx", {}).get("tag")
        return ConfigError(
            file,
            *value_pos,
            f"{dotted_path([*path, tag])}: '{value}' is not one of: {', '.join(tags)}",
        )
    file, depth, key_pos, value_pos = _where(source, path)
    if drop_outside and depth < len(path):
        return None
    if kind == "extra_forbidden" or on_key:
        allowed = list(holder.model_fields) if is_model(holder) else []
        name = str(path[-1]) if path else ""
        hint = suggestion(name, allowed, "allowed keys", "remove it")
        return ConfigError(file, *key_pos, f"{dotted}: unknown key; {hint}")
    message = _message(err, leaf)
    return ConfigError(file, *value_pos, f"{dotted}: {message}" if dotted else message)


def _resolve(model: Any, loc: tuple[Any, ...]) -> tuple[list[str | int], Any, Any, bool]:
    """Follow a pydantic loc through the types: (YAML path without union tags, model holding the last key,
    type of the last element, whether the error is about a mapping key rather than its value)."""
    tp: Any = model
    holder: Any = None
    path: list[str | int] = []
    on_key = False
    for elem in loc:
        tp = unwrap(tp)
        tagged = tagged_member(tp, elem)
        if tagged is not None:  # a union with a callable discriminator: its tag is not in the YAML
            tp = tagged
            continue
        members = union_models(tp)
        if members:
            tag, _ = discriminator(tp)
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
        if is_model(tp):
            holder = tp
            info = tp.model_fields.get(elem) if isinstance(elem, str) else None
            # with the field's own constraints (a PatternHint among them), which pydantic keeps apart
            tp = info.rebuild_annotation() if info is not None else None
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


def _hint_for(tp: Any) -> str:
    tp = unwrap(tp)
    if get_origin(tp) is Literal:
        return f"; one of: {', '.join(str(v) for v in get_args(tp))}"
    tag, tags = discriminator(tp)
    if tags:
        return f"; a mapping with `{tag}:` one of {', '.join(tags)}"
    return ""


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
        return f"expected {_TYPE_WORDS[kind]}, got {describe(value)}"
    if kind == "literal_error":
        allowed = [str(v) for v in get_args(unwrap(leaf))] if get_origin(unwrap(leaf)) is Literal else []
        choices = ", ".join(allowed) if allowed else str(ctx.get("expected", ""))
        return f"{show(value)} is not one of: {choices}"
    if kind == "string_pattern_mismatch":
        hint = pattern_hint(leaf) or f"does not match the pattern {ctx.get('pattern')}"
        return f"{show(value)} {hint}"
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
        return f"must be {words} {limit}, got {show(value)}"
    if kind in ("value_error", "assertion_error"):
        text = str(ctx.get("error") or err.get("msg", ""))
        return text.removeprefix("Value error, ")
    if kind == "missing":
        return "required key missing"
    return f"{err.get('msg', 'invalid value')} (got {describe(value)})"

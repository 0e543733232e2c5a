"""Reading the models' type annotations: Annotated, Optional and discriminated unions of models.

Both the error translation (which follows a pydantic `loc` back through the types) and the schema and
reference generator walk the same annotations; this module is the one place that knows how.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Tag


def unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional; a union of several members is returned as is."""
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


def annotations_of(tp: Any) -> list[Any]:
    """The Annotated metadata of `tp`, also through Optional (`Annotated[str, ...] | None`)."""
    found: list[Any] = []
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            found.extend(get_args(tp)[1:])
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return found
            tp = members[0]
        else:
            return found


def is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def union_models(tp: Any) -> list[type[BaseModel]]:
    """The models of a union of models (none for anything else)."""
    if get_origin(tp) in (Union, types.UnionType):
        return [m for m in (unwrap(a) for a in get_args(tp)) if is_model(m)]
    return []


def discriminator(tp: Any) -> tuple[str, list[str]]:
    """The discriminator key of a union of models and its allowed values (("type", []) when none)."""
    members = union_models(unwrap(tp))
    if not members:
        return "type", []
    for name, info in members[0].model_fields.items():
        if get_origin(info.annotation) is Literal and all(
            name in m.model_fields and get_origin(m.model_fields[name].annotation) is Literal for m in members
        ):
            return name, [str(v) for m in members for v in get_args(m.model_fields[name].annotation)]
    return "type", []


def tagged_member(tp: Any, tag: Any) -> Any:
    """The member of a union with a callable discriminator whose `Tag` is `tag` (None if there is none)."""
    if get_origin(tp) not in (Union, types.UnionType):
        return None
    for member in get_args(tp):
        if get_origin(member) is Annotated and any(
            isinstance(m, Tag) and m.tag == tag for m in get_args(member)[1:]
        ):
            return get_args(member)[0]
    return None

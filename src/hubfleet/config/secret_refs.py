"""Secret references: the `{secret: KEY}` value of a secret-bearing setting, the two kinds of fields that take
one, and where a loaded model holds them.

Validation checks every reference names a key of its secrets file and the secrets commands list which
settings use a key, both without decrypting anything; only `hubfleet.secrets` ever decrypts.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, Discriminator, Field, SecretStr, Tag, ValidationInfo

from hubfleet.config.fields import PatternHint, Strict

SECRET_KEY_PATTERN = r"^[a-z0-9_]+$"
SecretKey = Annotated[
    str,
    Field(pattern=SECRET_KEY_PATTERN),
    PatternHint("is not a valid secret key; use lower-case letters, digits and '_'"),
]
"""A key of a secrets file, as named by `{secret: KEY}`."""
_SECRET_KEY = re.compile(SECRET_KEY_PATTERN)


def is_secret_key(key: str) -> bool:
    """Whether `key` may name a secret (the secrets files and `hubfleet secrets set` check keys with it)."""
    return _SECRET_KEY.fullmatch(key) is not None


class SecretRef(Strict):
    """A reference to a secret of this hub, stored encrypted in communities/<community>/secrets/<hub>.yaml
    (set it with `hubfleet secrets set HUB KEY`)."""

    secret: SecretKey = Field(
        max_length=128,
        description="Key in the hub's secrets file: lower-case letters, digits and '_'.",
    )


def _secret_kind(value: Any) -> str | None:
    if isinstance(value, dict | SecretRef):
        return "ref"
    if isinstance(value, str | SecretStr):
        return "text"
    return None


SecretOrPlain = Annotated[
    Annotated[SecretStr, Tag("text")] | Annotated[SecretRef, Tag("ref")],
    Discriminator(
        _secret_kind,
        custom_error_type="secret_type",
        custom_error_message="expected text or a secret reference such as {secret: KEY}",
    ),
]
"""A secret-bearing field that also accepts the value in plain text (for non-sensitive staging values)."""


PathOrSecret = Annotated[
    Annotated[str, Tag("text"), Field(min_length=1)] | Annotated[SecretRef, Tag("ref")],
    Discriminator(
        _secret_kind,
        custom_error_type="path_or_secret_type",
        custom_error_message="expected a file path or a secret reference such as {secret: KEY}",
    ),
]
"""A file (path relative to the fleet directory) or a fleet-level secret holding its content: PEM certificates
and keys."""


def _no_plain_secret(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, str | SecretStr):
        key = info.field_name or "KEY"
        raise ValueError(
            "must be a secret reference such as {secret: KEY}, never the value itself; "
            f"write `{key}: {{secret: {key}}}`, store the value with `hubfleet secrets set HUB {key}` "
            "and, as it was in plain text, rotate it at the provider"
        )
    return value


def _no_plain_fleet_secret(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, str | SecretStr):
        key = info.field_name or "KEY"
        raise ValueError(
            "must be a secret reference such as {secret: KEY}, never the value itself; "
            f"write `{key}: {{secret: {key}}}`, store the value with "
            f"`hubfleet secrets set --fleet-level {key}` and, as it was in plain text, "
            "rotate it at the provider"
        )
    return value


SecretOnly = Annotated[SecretRef, BeforeValidator(_no_plain_secret)]
"""A secret-bearing field of a hub that accepts only a reference `{secret: KEY}` (client secrets, tokens)."""
FleetSecretOnly = Annotated[SecretRef, BeforeValidator(_no_plain_fleet_secret)]
"""The same in fleet.yaml, whose references name fleet-level secrets (secrets/fleet.yaml)."""


def secret_refs(model: BaseModel, prefix: str = "") -> list[tuple[str, SecretRef]]:
    """Every SecretRef in `model`, with its dotted path (`auth.password`, `a.0.b` for list items)."""
    found: list[tuple[str, SecretRef]] = []

    def walk(value: object, path: str) -> None:
        if isinstance(value, SecretRef):
            found.append((path, value))
        elif isinstance(value, BaseModel):
            for name in _fields_with_refs(type(value)):
                walk(getattr(value, name), f"{path}.{name}" if path else name)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, f"{path}.{i}")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")

    walk(model, prefix.rstrip("."))
    return found


_WITH_REFS: dict[type, tuple[str, ...]] = {}


def _fields_with_refs(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of `model` whose type can hold a SecretRef (the others need not be walked: a hub has
    hundreds of settings and a handful of secrets). Worked out once per model class."""
    found = _WITH_REFS.get(model)
    if found is None:
        _WITH_REFS[model] = tuple(model.model_fields)  # a model that contains itself: walk all, for now
        found = tuple(
            name for name, info in model.model_fields.items() if _may_hold_refs(info.annotation, set())
        )
        _WITH_REFS[model] = found
    return found


def _may_hold_refs(annotation: Any, seen: set[int]) -> bool:
    """Whether a value of this type can be or contain a SecretRef; anything unclear (Any, an unknown
    generic) counts as yes."""
    if id(annotation) in seen:
        return False
    seen.add(id(annotation))
    if annotation is None or annotation is type(None):
        return False
    if isinstance(annotation, type):
        if issubclass(annotation, SecretRef):
            return True
        if issubclass(annotation, BaseModel):
            return bool(_fields_with_refs(annotation))
        if issubclass(annotation, str | int | float | bool | bytes | SecretStr):
            return False
        if annotation.__module__ in ("datetime", "pathlib", "ipaddress", "decimal", "uuid", "enum"):
            return False
        if issubclass(annotation, Enum):
            return False
    args = get_args(annotation)
    origin = get_origin(annotation)
    if origin is Literal:
        return False
    if args:
        return any(_may_hold_refs(arg, seen) for arg in args if not _is_metadata(arg))
    return True


def _is_metadata(arg: Any) -> bool:
    """An Annotated extra (a Field, a validator, a Tag), not a type."""
    return not (isinstance(arg, type) or get_origin(arg) is not None or arg is Any or arg is None)

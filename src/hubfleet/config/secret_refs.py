"""Secret references: the `{secret: KEY}` value of a secret-bearing setting, the two kinds of fields that take
one, and where a loaded model holds them.

Validation checks every reference names a key of its secrets file and the secrets commands list which
settings use a key, both without decrypting anything; only `hubfleet.secrets` ever decrypts.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

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
            for name in type(value).model_fields:
                walk(getattr(value, name), f"{path}.{name}" if path else name)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, f"{path}.{i}")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")

    walk(model, prefix.rstrip("."))
    return found

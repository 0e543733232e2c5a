"""Find the `{secret: KEY}` references in a hub's settings (no decryption, no key needed)."""

from __future__ import annotations

from pydantic import BaseModel

from hubfleet.config.models import SecretRef


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

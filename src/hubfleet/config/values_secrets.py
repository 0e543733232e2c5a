"""`{secret: KEY}` inside raw chart values (`kubernetes.extra_values`), at any depth of mappings.

The model turns each such mapping into a `SecretRef` (`refs_in_values`), so validation checks its key like any
other secret reference; rendering leaves it out of the public values (`without_secrets`) and the deploy puts
its decrypted value into the secret values document at the same path (`secret_paths`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from hubfleet.config.secret_refs import SecretRef, is_secret_key


def _is_ref(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) == 1
        and "secret" in value
        and isinstance(value["secret"], str)
    )


def refs_in_values(values: dict[str, Any], path: str = "") -> dict[str, Any]:
    """`values` with every `{secret: KEY}` mapping as a SecretRef; ValueError for a bad key or a reference
    inside a list (helm replaces lists whole, so a list cannot be split between the public and the secret
    values files)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        here = f"{path}.{key}" if path else str(key)
        if isinstance(value, SecretRef):
            out[key] = value
        elif _is_ref(value):
            if not is_secret_key(value["secret"]) or len(value["secret"]) > 128:
                raise ValueError(
                    f"{here}: '{value['secret'][:60]}' is not a valid secret key; use lower-case letters, "
                    "digits and '_'"
                )
            out[key] = SecretRef(secret=value["secret"])
        elif isinstance(value, dict):
            out[key] = refs_in_values(value, here)
        else:
            if isinstance(value, list) and _holds_ref(value):
                raise ValueError(
                    f"{here}: a {{secret: KEY}} inside a list cannot be kept out of the public values (helm "
                    "replaces lists whole); use the chart's mapping form where it has one (such as "
                    "`singleuser.extraEnv: {NAME: {secret: KEY}}`) or a setting hubfleet models"
                )
            out[key] = value
    return out


def _holds_ref(value: Any) -> bool:
    if _is_ref(value) or isinstance(value, SecretRef):
        return True
    if isinstance(value, Mapping):
        return any(_holds_ref(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_ref(v) for v in value)
    return False


def secret_paths(
    values: Mapping[str, Any], path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], SecretRef]]:
    """Every SecretRef of `values` with its path of keys."""
    for key, value in values.items():
        if isinstance(value, SecretRef):
            yield (*path, str(key)), value
        elif isinstance(value, Mapping):
            yield from secret_paths(value, (*path, str(key)))


def without_secrets(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with every SecretRef left out (and the mappings that held nothing else)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, SecretRef):
            continue
        if isinstance(value, Mapping):
            inner = without_secrets(value)
            if inner or not value:
                out[key] = inner
            continue
        out[key] = value
    return out

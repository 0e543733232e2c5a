"""How a hub inherits fleet.yaml `defaults`: the one list of settings merged field by field.

The loader merges with it, error positions follow it (a key a hub file does not set may come from
`defaults`), and the generated config reference states it, so the three cannot disagree.
"""

from __future__ import annotations

from typing import Any

MERGED_PER_FIELD = ("resources", "culling", "kubernetes", "anomalies", "backup")
"""Merged field by field with fleet.yaml `defaults`; every other key (auth too) is replaced whole."""


def merge_defaults(defaults: dict[str, Any], hub: Any) -> Any:
    """The hub's effective settings: the hub file over fleet.yaml `defaults`.

    A key set in the hub file wins; the settings of MERGED_PER_FIELD merge field by field; any other key,
    `auth` included, is replaced whole.
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


def merge_rule() -> str:
    """The inheritance rule in words, for the documentation: "a key set in the hub file wins, ..."."""
    names = [f"`{name}`" for name in MERGED_PER_FIELD]
    listed = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
    return (
        f"a key set in the hub file wins; {listed} merge field by field; "
        "any other key (`auth` too) is replaced whole"
    )

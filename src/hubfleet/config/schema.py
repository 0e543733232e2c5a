"""JSON Schemas (for editors) and the markdown config reference, both generated from the models.

Regenerate the committed copies with `python -m hubfleet.config.schema` from the repository root:
docs/schema/*.schema.json and docs/config-reference.md (a test checks they are up to date).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, TypeAdapter
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from hubfleet.config.defaults import merge_rule
from hubfleet.config.introspect import annotations_of, discriminator, is_model, union_models, unwrap
from hubfleet.config.models import Cluster, Community, FleetSettings, Hub, HubSettings
from hubfleet.config.secret_refs import SecretRef

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

FILE_KINDS: dict[str, tuple[Any, str]] = {
    "fleet": (FleetSettings, "fleet.yaml"),
    "cluster": (Cluster, "clusters/<name>.yaml"),
    "community": (Community, "communities/<name>/community.yaml"),
    "hub": (Hub, "communities/<community>/hubs/<hub>.yaml"),
}


def fleet_json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each file kind, keyed by kind (fleet, cluster, community, hub)."""
    schemas = {}
    for kind, (model, where) in FILE_KINDS.items():
        schema = model.model_json_schema() if is_model(model) else TypeAdapter(model).json_schema()
        schemas[kind] = {
            "$schema": JSON_SCHEMA_DIALECT,
            "title": f"hubfleet {kind} ({where})",
            **{k: v for k, v in schema.items() if k != "title"},
        }
    return schemas


def schema_filename(kind: str) -> str:
    return f"{kind}.schema.json"


def write_schemas(out_dir: Path) -> list[Path]:
    """Write <kind>.schema.json for every file kind into out_dir; return the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, schema in fleet_json_schemas().items():
        path = out_dir / schema_filename(kind)
        path.write_text(json.dumps(schema, indent=2, sort_keys=False) + "\n")
        written.append(path)
    return written


# --------------------------------------------------------------------------- markdown reference


def _secret_type_name(tp: Any) -> str | None:
    """SecretOnly: a reference; SecretOrPlain: text or a reference; anything else: None."""
    if tp is SecretRef:
        return "secret reference `{secret: KEY}`"
    members = [unwrap(a) for a in get_args(tp)] if get_origin(tp) in (Union, types.UnionType) else []
    if SecretRef in members and SecretStr in members:
        return "text (secret) or secret reference `{secret: KEY}`"
    if SecretRef in members and str in members:
        return "file path or secret reference `{secret: KEY}`"
    return None


def _type_name(tp: Any) -> str:
    tp = unwrap(tp)
    secret = _secret_type_name(tp)
    if secret:
        return secret
    origin = get_origin(tp)
    if origin is Literal:
        return "text" if all(isinstance(v, str) for v in get_args(tp)) else "value"
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"mapping of text to {_type_name(get_args(tp)[1])}"
    members = union_models(tp)
    if members:
        tag, tags = discriminator(tp)
        return f"mapping (`{tag}`: {', '.join(tags)})"
    if is_model(tp):
        return "mapping"
    return {
        str: "text",
        int: "integer",
        float: "number",
        bool: "boolean",
        SecretStr: "text (secret)",
    }.get(tp, getattr(tp, "__name__", str(tp)))


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "see below"
    else:
        value = info.default
    if value is None:
        return "unset"
    if value is PydanticUndefined:
        return ""
    return f"`{json.dumps(value, default=str)}`"


def _constraints(info: FieldInfo) -> list[Any]:
    """The constraints of a field, then those of its type when that is optional (`DomainName | None`)."""
    found = list(info.metadata)
    for meta in annotations_of(info.annotation):
        found.extend(meta.metadata if isinstance(meta, FieldInfo) else [meta])
    return found


def _allowed(info: FieldInfo) -> str:
    parts = []
    tp = unwrap(info.annotation)
    if get_origin(tp) is Literal:
        parts.append(", ".join(f"`{v}`" for v in get_args(tp)))
    for meta in _constraints(info):
        for attr, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                parts.append(f"{symbol} {getattr(meta, attr)}")
        if getattr(meta, "min_length", None):
            parts.append(f"at least {meta.min_length} character(s)")
        if getattr(meta, "max_length", None):
            parts.append(f"at most {meta.max_length} characters")
        if getattr(meta, "pattern", None):
            parts.append(f"pattern `{meta.pattern}`")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(
    model: type[BaseModel], prefix: str, applies: str = "", only: str | None = None
) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        if only is not None and name != only:
            continue
        path = f"{prefix}{name}"
        tp = unwrap(info.annotation)
        description = info.description or ""
        layer = is_model(tp) and issubclass(tp, HubSettings) and model is not FleetSettings
        if layer:  # the keys of a cluster's or a community's `defaults` are listed once, under fleet.yaml
            more = ", and:" if tp is not HubSettings else "."
            description += f" Same keys as fleet.yaml `defaults`{more}"
        rows.append(
            (f"`{path}`{applies}", _type_name(tp), _default(info), _cell(description), _cell(_allowed(info)))
        )
        members = union_models(tp)
        if _secret_type_name(tp):
            pass  # described in the Secrets section rather than row by row
        elif members:
            rows.extend(_union_rows(members, tp, f"{path}."))
        elif layer:
            own = [n for n in tp.model_fields if n not in HubSettings.model_fields]
            for extra in own:
                rows.extend(_rows(tp, f"{path}.", only=extra))
        elif is_model(tp):
            rows.extend(_rows(tp, f"{path}."))
        elif get_origin(tp) in (list, dict) and is_model(unwrap(get_args(tp)[-1])):
            item = "[]" if get_origin(tp) is list else ".<key>"
            rows.extend(_rows(unwrap(get_args(tp)[-1]), f"{path}{item}."))
    return rows


def _union_rows(members: list[type[BaseModel]], tp: Any, prefix: str) -> list[tuple[str, ...]]:
    """Rows for a union of models: a field shared by several variants is listed once, naming them."""
    tag, _ = discriminator(tp)
    variants: dict[str, list[str]] = {}
    first: dict[str, type[BaseModel]] = {}
    for member in members:
        value = get_args(member.model_fields[tag].annotation)[0]
        for name in member.model_fields:
            if name == tag:
                continue
            variants.setdefault(name, []).append(str(value))
            first.setdefault(name, member)
    rows: list[tuple[str, ...]] = []
    for name, tags in variants.items():
        member = first[name]
        applies = f" ({tag}: {', '.join(tags)})" if len(tags) < len(members) else ""
        rows.extend(_rows(member, prefix, applies, only=name))
    return rows


def _doc(tp: Any) -> str:
    members = union_models(unwrap(tp))
    if members:
        tag, tags = discriminator(tp)
        return "\n".join(f"- {tag} `{tags[i]}`: {m.__doc__ or ''}" for i, m in enumerate(members))
    return (tp.__doc__ or "").strip()


def render_reference() -> str:
    """The markdown config reference: every key of every file kind with type, default and allowed values."""
    out = [
        "# Fleet configuration reference",
        "",
        "<!-- Generated from the models in src/hubfleet/config/ by `python -m hubfleet.config.schema`; "
        "do not edit by hand. -->",
        "",
        "A fleet is a directory: `fleet.yaml`, one file per cluster in `clusters/`, and one directory per",
        "community in `communities/` holding `community.yaml` and one file per hub in `hubs/`.",
        "Unknown keys are errors. Hubs inherit `defaults` from fleet.yaml, their cluster file and their",
        "community.yaml:",
        f"{merge_rule()}.",
        "JSON Schemas for editors are in [schema/](schema/) (`hubfleet schema` writes them).",
        "",
        "## Secrets",
        "",
        "A secret-bearing key takes a reference `{secret: KEY}` to the hub's secrets file,",
        "`communities/<community>/secrets/<hub>.yaml`: a mapping of KEY (lower-case letters, digits, `_`) to",
        "the ASCII-armored age ciphertext of its value, encrypted to every operator's `age_recipient` and",
        "every `ci_recipients` key of fleet.yaml. Write it with `hubfleet secrets set HUB KEY`,",
        "never by hand.",
        "Two kinds of secret-bearing keys:",
        "",
        "- *text (secret) or secret reference* (`SecretOrPlain`): plain text is accepted too, for values",
        "  that need no protection (a staging hub's shared demo password); prefer `{secret: KEY}`.",
        "- *secret reference* (`SecretOnly`): only `{secret: KEY}`; the value in clear is refused.",
        "",
    ]
    for kind, (model, where) in FILE_KINDS.items():
        out += [f"## {kind}: `{where}`", "", _doc(model), ""]
        out += ["| Key | Type | Default | Description | Allowed |", "|---|---|---|---|---|"]
        members = union_models(unwrap(model))
        rows = _union_rows(members, model, "") if members else _rows(model, "")
        if members:
            tag, tags = discriminator(model)
            choices = ", ".join(f"`{t}`" for t in tags)
            rows.insert(0, (f"`{tag}`", "text", "required", "Selects the variant.", choices))
        out += ["| " + " | ".join(row) + " |" for row in rows]
        out.append("")
    return "\n".join(out)


def write_docs(repo_root: Path) -> list[Path]:
    docs = Path(repo_root) / "docs"
    written = write_schemas(docs / "schema")
    reference = docs / "config-reference.md"
    reference.write_text(render_reference())
    return [*written, reference]


if __name__ == "__main__":
    for path in write_docs(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()):
        print(f"wrote {path}")

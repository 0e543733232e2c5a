"""`hubfleet init`: a new fleet repository from the templates in templates/.

Every file is written only where none exists: with `add_missing` an existing fleet gets what it lacks and
keeps every byte of what it has, so a second run changes nothing. The age identity is the operator's, not the
fleet's: it lives where every `hubfleet secrets` command looks without flags ($HUBFLEET_AGE_IDENTITY, else
~/.config/hubfleet/age-identity.txt), outside the repository, and an existing one is reused (fleet.yaml gets
only its public key).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from hubfleet.config.fields import NAME_PATTERN
from hubfleet.config.schema import fleet_json_schemas, schema_filename
from hubfleet.config.secrets_file import render_secrets_file
from hubfleet.scaffold import ci
from hubfleet.secrets import age
from hubfleet.settings import UserError

CLUSTER_KINDS = ("local", "gcp", "aws", "azure")
CLUSTER_NAMES = {"local": "local", "gcp": "gke", "aws": "eks", "azure": "aks"}
CLUSTER_DESCRIPTIONS = {
    "local": "JupyterHub processes on the machine that runs `hubfleet up`",
    "gcp": "a GKE cluster on Google Cloud",
    "aws": "an EKS cluster on AWS",
    "azure": "an AKS cluster on Azure",
}
COMMUNITY = "example"
METRICS_PORT = 18000
HUB_PORTS = {"staging": 18001, "prod": 18002}
"""Loopback ports of a local fleet's hubs; the demo fleet uses 18001-18004 too, so one runs at a time."""
STAGING_SECRET = "staging_password"
TOKEN_KEY = "service_token_key"
TOKEN_KEY_LINES = f"""\
# Every hub's service tokens are derived from this fleet-level secret (made by init), so operators and CI
# runners all use the same ones. Rotate: set a new random value (docs/starting-a-fleet.md), deploy every hub.
{TOKEN_KEY}: {{secret: {TOKEN_KEY}}}"""
FLEET_FILES = ("fleet.yaml", "clusters/", "communities/", "secrets/", "README.md")
"""What a new fleet gets and an existing one (its fleet.yaml there) never: `--add-missing` on an existing
fleet adds repository files only (CI, pre-commit, schemas, .gitignore, editor settings), never an example
community, a second cluster or a README that describes them."""


@dataclass
class ScaffoldResult:
    """What `scaffold` did: files it wrote, files that existed and were left alone, and the identity."""

    created: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    identity: Path | None = None
    """The age identity whose public key fleet.yaml records (None: fleet.yaml existed and was kept)."""
    identity_created: bool = False
    notes: list[str] = field(default_factory=list)


def _template(name: str) -> str:
    return (resources.files("hubfleet.scaffold") / "templates" / name).read_text()


def _fill(text: str, values: dict[str, str]) -> str:
    """Replace every {{key}}; a key without a value is a bug in the templates, not the user's problem."""
    filled = re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], text)
    return re.sub(r"\n{3,}", "\n\n", filled).rstrip("\n") + "\n"


def fleet_name_for(target: Path, name: str | None) -> str:
    """--name, else the directory's name made into a valid fleet name (lower-case, '-' for the rest)."""
    if name is not None:
        if not re.fullmatch(NAME_PATTERN, name):
            raise UserError(
                f"--name '{name}' is not a valid fleet name; use 1-63 lower-case letters, digits and '-', "
                "starting and ending with a letter or digit"
            )
        return name
    derived = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", target.resolve().name.lower())).strip("-")[:63]
    if not re.fullmatch(NAME_PATTERN, derived or "-"):
        raise UserError(
            f"cannot make a fleet name of the directory name '{target.name}'; pass --name NAME "
            "(lower-case letters, digits and '-')"
        )
    return derived


def _check_target(target: Path, add_missing: bool) -> None:
    if target.exists() and not target.is_dir():
        raise UserError(f"{target} exists and is not a directory; give a new or empty directory")
    if not target.is_dir() or add_missing:
        return
    present = sorted(p.name for p in target.iterdir())
    if present:
        shown = ", ".join(present[:6]) + (f" and {len(present) - 6} more" if len(present) > 6 else "")
        raise UserError(
            f"{target} is not empty (it holds {shown}); give a new or empty directory, or pass "
            "--add-missing to add only the files that are missing (no existing file is changed)"
        )


def _identity(flag: Path | None, result: ScaffoldResult) -> str:
    """The recipient of the operator's identity: an existing one is reused, else a new one is written 0600."""
    path = age.identity_path(flag)
    result.identity = path
    if path.exists():
        return age.load_identity(path).recipients[0]
    text, recipient = age.generate()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise UserError(
            f"cannot write the age identity {path}: {exc.strerror}; pass --identity FILE"
        ) from None
    with os.fdopen(fd, "w") as f:
        f.write(text)
    result.identity_created = True
    return recipient


def _home_hint(path: Path) -> str:
    home = Path.home()
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)


def _address(cluster: str, stage: str) -> str:
    if cluster == "local":
        return f"port: {HUB_PORTS[stage]}  # on 127.0.0.1"
    host = f"{COMMUNITY}-staging" if stage == "staging" else COMMUNITY
    return f"domain: {host}.hubs.example.org  # EDIT: the hub's address (DNS: the cluster's ingress)"


def _files(cluster: str, values: dict[str, str]) -> dict[str, str]:
    """Relative path -> text of every file but the schemas, the secrets file and the CI files."""
    cluster_name = CLUSTER_NAMES[cluster]
    community = f"communities/{COMMUNITY}"
    return {
        "fleet.yaml": _fill(_template("fleet.yaml"), values),
        f"clusters/{cluster_name}.yaml": _fill(_template(f"clusters/{cluster}.yaml"), values),
        f"{community}/community.yaml": _fill(_template("community.yaml"), values),
        f"{community}/hubs/staging.yaml": _fill(_template("hubs/staging.yaml"), values),
        f"{community}/hubs/prod.yaml": _fill(_template("hubs/prod.yaml"), values),
        ".gitignore": _fill(_template("gitignore"), values),
        ".pre-commit-config.yaml": _template("pre-commit-config.yaml"),
        ".vscode/settings.json": _template("vscode-settings.json"),
        "README.md": _fill(_template("README.md"), values),
    }


CI_ROLES = {
    "pull-request": "CI on pull requests: validate, plan, the plan's diff as a comment",
    "deploy": "CI on a push to main: the changed staging hubs, then their prod hubs",
    "schedul": "CI on a schedule: ready mode for events, the cluster inventory",
    "gitlab": "the same pipeline on GitLab CI",
    "actionlint": "settings of actionlint, which checks the workflows",
}


def _ci_role(path: str) -> str:
    return next((role for key, role in CI_ROLES.items() if key in path), "the CI pipeline")


def _values(cluster: str, fleet_name: str, ci_paths: list[str]) -> dict[str, str]:
    kubernetes = cluster != "local"
    cluster_name = CLUSTER_NAMES[cluster]
    ci_rows = "".join(f"| `{p}` | {_ci_role(p)} |\n" for p in ci_paths)
    return {
        "fleet_name": fleet_name,
        "cluster_kind": cluster,
        "cluster_name": cluster_name,
        "cluster_description": CLUSTER_DESCRIPTIONS[cluster],
        "community": COMMUNITY,
        "metrics_port": str(METRICS_PORT),
        "kubernetes_defaults": _template("kubernetes-defaults.yaml").rstrip("\n") if kubernetes else "",
        "address_staging": _address(cluster, "staging"),
        "address_prod": _address(cluster, "prod"),
        "ci_rows": ci_rows,
        "token_key": TOKEN_KEY_LINES if kubernetes else "",
        "ci_state": (
            "\n\nA CI runner starts empty, so the jobs keep the fleet's state (deploy history, ready-mode "
            "windows)\non the branch `hubfleet-state`, age-encrypted to the same keys (`hubfleet ci state "
            "load/save`):\nleave that branch alone, and never merge it."
            if kubernetes
            else ""
        ),
        "edit_cluster": f", and the cluster in `clusters/{cluster_name}.yaml`" if kubernetes else "",
        "validate_chart": (
            " (`hubfleet validate --chart --charts-dir DIR` also renders each hub with the real chart)"
            if kubernetes
            else ""
        ),
        "try_it": (
            "Deploy the staging hub by hand once: `hubfleet plan`, then `hubfleet deploy "
            f"{COMMUNITY}-staging` (with your cluster credentials)."
            if kubernetes
            else "Run it: `hubfleet up`; the staging hub answers at "
            f"http://127.0.0.1:{HUB_PORTS['staging']}, "
            f"the prod hub at http://127.0.0.1:{HUB_PORTS['prod']}, the console at "
            f"http://127.0.0.1:{METRICS_PORT}; `hubfleet down` stops them."
        ),
    }


def scaffold(
    target: Path,
    *,
    cluster: str = "local",
    name: str | None = None,
    add_missing: bool = False,
    identity: Path | None = None,
) -> ScaffoldResult:
    """Write a new fleet repository into `target` (new or empty, or any directory with `add_missing`).

    `identity`: the age identity file to reuse or create (default: $HUBFLEET_AGE_IDENTITY, else
    ~/.config/hubfleet/age-identity.txt)."""
    if cluster not in CLUSTER_KINDS:
        raise UserError(f"unknown cluster kind '{cluster}'; use one of {', '.join(CLUSTER_KINDS)}")
    target = Path(target).expanduser()
    _check_target(target, add_missing)
    fleet_name = fleet_name_for(target, name)
    result = ScaffoldResult()
    ci_texts = ci.files(cluster)
    values = _values(cluster, fleet_name, sorted(ci_texts))

    values |= {
        "identity_hint": _home_hint(age.identity_path(identity)),
        "identity_ignore": _identity_ignore(target, age.identity_path(identity)),
        "age_recipient": "",
    }
    secrets_path = f"communities/{COMMUNITY}/secrets/{COMMUNITY}-staging.yaml"
    schemas = {f"schema/{schema_filename(k)}": _schema_text(s) for k, s in fleet_json_schemas().items()}
    _in_the_way(target, [*_files(cluster, values), *ci_texts, *schemas, secrets_path])

    texts = ci_texts | schemas
    if (target / "fleet.yaml").exists():  # repository files only: the fleet's own files are the operator's
        texts |= {p: t for p, t in _files(cluster, values).items() if not p.startswith(FLEET_FILES)}
        result.notes.append(
            "fleet.yaml exists: added only missing repository files (CI, pre-commit, schemas, .gitignore, "
            "editor settings), no example community, cluster or README"
        )
    else:
        recipients = [_identity(identity, result)]
        values["age_recipient"] = recipients[0]
        texts |= _files(cluster, values)
        if not (target / secrets_path).exists():
            password = age.encrypt(secrets.token_urlsafe(18), recipients)
            texts[secrets_path] = render_secrets_file(f"{COMMUNITY}-staging", {STAGING_SECRET: password})
        if cluster != "local":  # the key the hubs' service tokens are derived from (fleet.yaml names it)
            key = age.encrypt(secrets.token_hex(32), recipients)
            texts["secrets/fleet.yaml"] = render_secrets_file(None, {TOKEN_KEY: key})
    for relative in sorted(texts):
        _write_new(target, relative, texts[relative], result)
    return result


def _schema_text(schema: dict) -> str:
    """As `hubfleet schema --out` writes it (config.schema.write_schemas)."""
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def _identity_ignore(target: Path, identity: Path) -> str:
    """A .gitignore line for an identity kept inside the repository that the patterns do not already cover."""
    try:
        relative = identity.resolve().relative_to(target.resolve())
    except ValueError:
        return ""
    covered = "age-identity" in identity.name or identity.suffix == ".agekey"
    if covered or relative.parts[0] in (".hubfleet", ".hubfleet-data", ".hubfleet-backups"):
        return ""
    return f"/{relative.as_posix()}\n"


def _in_the_way(target: Path, relatives: list[str]) -> None:
    """Refuse, before anything is written, a file where init needs a directory (clusters, .vscode...)."""
    for relative in relatives:
        for parent in (target / relative).parents:
            if parent == target or target not in parent.parents:
                break
            if parent.exists() and not parent.is_dir():
                raise UserError(
                    f"{parent} is a file where init writes the directory {parent.name}/; move it away and "
                    "run `hubfleet init --add-missing` again (nothing was written)"
                )


def _write_new(target: Path, relative: str, text: str, result: ScaffoldResult) -> None:
    """Create `target/relative` with `text` unless something is there already (then it is kept as it is)."""
    path = target / relative
    if path.exists() or path.is_symlink():
        result.kept.append(path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("x") as f:
        f.write(text)
    result.created.append(path)

"""The secrets file format, read and written in one place so that what `hubfleet secrets set` writes is
exactly what validation accepts.

communities/<community>/secrets/<hub>.yaml (and the fleet-level secrets/fleet.yaml) maps each KEY, in
plaintext so that validation can check presence without a key and diffs show which secret changed, to the
ASCII-armored age ciphertext of its value. Reading never decrypts and no message quotes a value: a value that
is not ciphertext may be a secret written in clear.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubfleet.config.fields import pattern_hint
from hubfleet.config.fleet import ConfigError
from hubfleet.config.secret_refs import SecretKey, is_secret_key
from hubfleet.config.yaml_source import Source, read_yaml, relative, show

SECRETS_DIR = "secrets"
"""The directory of a community holding its hubs' secrets files."""
FLEET_SECRETS_FILE = "secrets/fleet.yaml"
"""Fleet-level secrets (alert channels, console OIDC client), same format as the hub secrets files."""

_ARMOR_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----"
_ARMOR_END = "-----END AGE ENCRYPTED FILE-----"
_ARMOR_BODY = re.compile(r"[A-Za-z0-9+/=\s]*")


@dataclass
class SecretsEntry:
    """A secrets file as loaded: communities/<directory>/secrets/<hub_name>.yaml."""

    hub_name: str
    directory: str
    source: Source
    values: dict[str, str]
    """Key -> armored age ciphertext (only the well-formed entries)."""
    malformed: set[str] = field(default_factory=set)
    """Keys whose value is not age ciphertext (reported; not reported again as missing)."""


def hub_secrets_file(fleet_root: Path, community: str, hub_name: str) -> Path:
    """communities/<community>/secrets/<hub>.yaml."""
    return Path(fleet_root) / "communities" / community / SECRETS_DIR / f"{hub_name}.yaml"


def fleet_secrets_file(fleet_root: Path) -> Path:
    """secrets/fleet.yaml: fleet-level secrets (alert channels' webhook URLs, SMTP passwords)."""
    return Path(fleet_root) / FLEET_SECRETS_FILE


def is_armored_age(value: Any) -> bool:
    """Whether `value` looks like ASCII-armored age ciphertext (checked without any key)."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    return (
        text.startswith(_ARMOR_BEGIN)
        and text.endswith(_ARMOR_END)
        and len(text) > len(_ARMOR_BEGIN) + len(_ARMOR_END)
        and _ARMOR_BODY.fullmatch(text[len(_ARMOR_BEGIN) : -len(_ARMOR_END)]) is not None
    )


def read_secrets_file(
    root: Path, path: Path, community: str, hub_name: str | None, errors: list[ConfigError]
) -> SecretsEntry | None:
    """A secrets file (hub_name None: the fleet-level secrets/fleet.yaml): KEY -> armored age ciphertext.
    Problems are appended to `errors`; None when the file cannot be read as a mapping at all."""
    set_cmd = f"hubfleet secrets set {hub_name}" if hub_name else "hubfleet secrets set --fleet-level"
    try:
        blank = all(not ln.strip() or ln.lstrip().startswith("#") for ln in path.read_text().splitlines())
    except (OSError, UnicodeDecodeError):
        blank = False
    if blank:
        return SecretsEntry(hub_name or "", community, Source(relative(root, path), ""), {})
    parsed = read_yaml(root, path, "keys set with `hubfleet secrets set`", errors)
    if parsed is None:
        return None
    source, plain = parsed
    values: dict[str, str] = {}
    malformed: set[str] = set()
    for key, value in plain.items():
        if not is_secret_key(key):
            _, key_pos, _ = source.find([key])
            errors.append(
                ConfigError(
                    source.file,
                    *key_pos,
                    f"{show(key)} {pattern_hint(SecretKey)}",
                )
            )
        elif not is_armored_age(value):
            malformed.add(key)
            _, _, value_pos = source.find([key])
            errors.append(
                ConfigError(
                    source.file,
                    *value_pos,
                    f"{key}: expected an age-encrypted value (-----BEGIN AGE ENCRYPTED FILE-----); "
                    f"never write a secret in clear: run `{set_cmd} {key}`",
                )
            )
        else:
            values[key] = value
    return SecretsEntry(hub_name or "", community, source, values, malformed)


def render_secrets_file(hub_name: str | None, values: dict[str, str]) -> str:
    """The file text: a header, then `key: |` blocks of armored ciphertext, keys sorted (stable diffs).
    hub_name None: the fleet-level secrets/fleet.yaml."""
    if hub_name is None:
        lines = [
            "# Fleet-level secrets: values encrypted with age to the recipients in fleet.yaml.",
            "# Change them with `hubfleet secrets set --fleet-level KEY`; "
            "use one in fleet.yaml `monitoring.alerts` as {secret: KEY}.",
        ]
    else:
        lines = [
            f"# Secrets of hub '{hub_name}': values encrypted with age to the recipients in fleet.yaml.",
            f"# Change them with `hubfleet secrets set {hub_name} KEY`; "
            "use one in the hub file as {secret: KEY}.",
        ]
    for key in sorted(values):
        armored = values[key].strip()
        lines.append(f"{key}: |")
        lines.extend(f"  {line}" for line in armored.splitlines())
    return "\n".join(lines) + "\n"


def write_secrets_file(path: Path, hub_name: str | None, values: dict[str, str]) -> None:
    """Replace the secrets file at `path` atomically with `values` (key -> armored ciphertext).
    hub_name None: the fleet-level secrets/fleet.yaml."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(render_secrets_file(hub_name, values))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # ciphertext only: meant to be committed
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

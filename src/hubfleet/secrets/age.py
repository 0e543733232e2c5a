"""age encryption through pyrage: identities, recipients, ASCII-armored ciphertext.

Error messages name files and keys, never a secret value or an identity's contents.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pyrage
from pyrage import x25519

from hubfleet.settings import UserError

IDENTITY_PREFIX = "AGE-SECRET-KEY-1"
DEFAULT_IDENTITY = Path("~/.config/hubfleet/age-identity.txt")
IDENTITY_ENV = "HUBFLEET_AGE_IDENTITY"


def default_identity_path() -> Path:
    """$HUBFLEET_AGE_IDENTITY, else ~/.config/hubfleet/age-identity.txt."""
    from_env = os.environ.get(IDENTITY_ENV)
    return Path(from_env).expanduser() if from_env else DEFAULT_IDENTITY.expanduser()


def identity_path(flag: Path | str | None = None) -> Path:
    """--identity FILE, else $HUBFLEET_AGE_IDENTITY, else ~/.config/hubfleet/age-identity.txt."""
    return Path(flag).expanduser() if flag else default_identity_path()


class Identity:
    """The private keys of one identity file. repr/str never show them."""

    def __init__(self, path: Path, keys: list[x25519.Identity]):
        self.path = path
        self._keys = keys

    @property
    def recipients(self) -> list[str]:
        return [str(k.to_public()) for k in self._keys]

    def decrypt(self, armored: str) -> str:
        """Raises pyrage.DecryptError when the value was not encrypted to this identity."""
        return pyrage.decrypt(armored.encode(), list(self._keys)).decode()

    def __repr__(self) -> str:
        return f"Identity(path={str(self.path)!r}, recipients={self.recipients!r})"

    __str__ = __repr__


def _no_identity_hint() -> str:
    return (
        "create one with `hubfleet secrets keygen` and add the public key it prints to your operator entry "
        "in fleet.yaml (age_recipient); where the fleet already has secrets, someone who can decrypt them "
        "then runs `hubfleet secrets rekey`; "
        f"or pass --identity FILE / set {IDENTITY_ENV}"
    )


def load_identity(path: Path | str | None = None) -> Identity:
    """Read an age identity file (lines `AGE-SECRET-KEY-1...`, `#` comments), as written by
    `hubfleet secrets keygen` or `age-keygen`."""
    path = identity_path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"age identity {path} not found; {_no_identity_hint()}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a text file"
        raise UserError(f"cannot read age identity {path}: {reason}") from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise UserError(
                f"{path}:{number}: not an age identity (expected a line AGE-SECRET-KEY-1...); "
                "point --identity or HUBFLEET_AGE_IDENTITY at the file `hubfleet secrets keygen` wrote"
            ) from None
    if not keys:
        raise UserError(f"{path} holds no age identity (AGE-SECRET-KEY-1...); {_no_identity_hint()}")
    return Identity(path, keys)


def encrypt(value: str, recipients: list[str]) -> str:
    """ASCII-armored age ciphertext of `value`, readable by any of `recipients` (age1... strings)."""
    if not recipients:
        raise UserError("no age recipients to encrypt to; add `age_recipient` to an operator in fleet.yaml")
    parsed = [x25519.Recipient.from_str(r) for r in recipients]
    return pyrage.encrypt(value.encode(), parsed, armored=True).decode()


def generate() -> tuple[str, str]:
    """A new identity: (its file text, its public recipient age1...)."""
    key = x25519.Identity.generate()
    recipient = str(key.to_public())
    created = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    return f"# created: {created}\n# public key: {recipient}\n{key}\n", recipient

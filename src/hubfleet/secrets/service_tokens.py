"""Each hub's control-plane and operator service tokens, derived from one fleet-wide key.

Without a key a hub's tokens are random and live in the state directory that made them
(<state>/hubs/<hub>/tokens.json), so a CI runner, which starts empty, would make new ones on every deploy:
the hub restarts for nothing and the operator's daemon, probing with the tokens of ITS state directory, is
locked out. With fleet.yaml `service_token_key: {secret: NAME}` (a fleet-level secret, age-encrypted to the
operators and `ci_recipients`) every machine that can decrypt it derives the same tokens:
HMAC-SHA256(key, "hubfleet service token" NUL hub NUL purpose), hex. Rotation: set a new key, deploy every
hub.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

from hubfleet.config.fleet import FleetConfig
from hubfleet.settings import UserError

PURPOSES = ("control", "operator")
KEY_FIELD = "service_token_key"
MIN_KEY_LENGTH = 32
"""A key shorter than this could be guessed, and with it every hub's admin tokens."""
MAKE_KEY = (
    "python3 -c 'import secrets; print(secrets.token_hex(32))' | hubfleet secrets set --fleet-level {name}"
)


class FleetSecrets(Protocol):
    def fleet_value(self, key: str) -> str: ...


def derive(key: str, hub_name: str) -> dict[str, str]:
    """{"control": hex, "operator": hex}: the same on every machine for the same key and hub."""
    return {
        purpose: hmac.new(
            key.encode(), f"hubfleet service token\0{hub_name}\0{purpose}".encode(), hashlib.sha256
        ).hexdigest()
        for purpose in PURPOSES
    }


def token_key(fleet: FleetConfig, secrets: FleetSecrets) -> str | None:
    """The decrypted `service_token_key`, or None when fleet.yaml sets none (tokens stay random per state
    directory). A key that cannot be decrypted or is too short is a UserError naming the secret."""
    ref = getattr(fleet.settings, KEY_FIELD, None)
    if ref is None:
        return None
    try:
        key = secrets.fleet_value(ref.secret)
    except UserError as exc:
        raise UserError(
            f"fleet.yaml {KEY_FIELD}: the hubs' service tokens are derived from the fleet-level secret "
            f"'{ref.secret}', which cannot be read: {exc}"
        ) from None
    if len(key.strip()) < MIN_KEY_LENGTH:
        raise UserError(
            f"fleet.yaml {KEY_FIELD}: the fleet-level secret '{ref.secret}' is shorter than "
            f"{MIN_KEY_LENGTH} characters, too easy to guess; set a random one: "
            f"{MAKE_KEY.format(name=ref.secret)} (then deploy every hub)"
        )
    return key.strip()

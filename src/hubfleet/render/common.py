"""Auth settings shared by the local and kubernetes renderers: who is an admin, who may log in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import DummyAuth, Hub, NativeAuth

NATIVE_AUTHENTICATOR = "nativeauthenticator.NativeAuthenticator"
NATIVE_TEMPLATES = (
    "import os\n"
    "import nativeauthenticator\n"
    "c.JupyterHub.template_paths = [\n"
    "    os.path.join(os.path.dirname(nativeauthenticator.__file__), 'templates')\n"
    "]\n"
)
"""NativeAuthenticator's sign-up pages: its templates must be on JupyterHub's template path."""


def effective_admins(fleet: FleetConfig, hub: Hub) -> list[str]:
    """The hub's admins plus the fleet's staff who have a username for this auth type."""
    assert hub.auth is not None
    admins = list(hub.auth.admin_users)
    for operator in fleet.fleet.operators:
        name = operator.usernames.get(hub.auth.type)
        if name and name not in admins:
            admins.append(name)
    return admins


@dataclass(frozen=True)
class AuthConfig:
    """A hub's authenticator as JupyterHub configuration, without secret values."""

    authenticator_class: str
    class_name: str
    """The configurable class its settings go to (DummyAuthenticator, NativeAuthenticator)."""
    traits: dict[str, Any] = field(default_factory=dict)
    needs_templates: bool = False


def auth_config(fleet: FleetConfig, hub: Hub) -> AuthConfig:
    """Authenticator class and its (non-secret) traits: admins incl. fleet staff, allow list or allow_all."""
    auth = hub.auth
    traits: dict[str, Any] = {"admin_users": sorted(effective_admins(fleet, hub))}
    # With no allow list, anyone who can authenticate may use the hub (the shared password, or an approved
    # sign-up); with one, only those users and the admins.
    if auth is not None and auth.allowed_users:
        traits["allowed_users"] = sorted(auth.allowed_users)
    else:
        traits["allow_all"] = True
    if isinstance(auth, DummyAuth):
        return AuthConfig("dummy", "DummyAuthenticator", traits)
    if isinstance(auth, NativeAuth):
        traits["open_signup"] = auth.open_signup
        traits["minimum_password_length"] = auth.minimum_password_length
        return AuthConfig(NATIVE_AUTHENTICATOR, "NativeAuthenticator", traits, needs_templates=True)
    raise ValueError(f"hub {hub.name}: unsupported auth {auth!r}")  # the validator refuses hubs without auth

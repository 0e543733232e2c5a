"""Auth settings shared by the local and kubernetes renderers: one place that turns a hub's `auth` block into
an authenticator class, its (public) traits, its secret traits and any start-up code.

Both renderers consume `auth_config`:
- local: `c.<Class>.<trait> = <value>` lines; secret traits read from environment variables (`secret_env`).
- kubernetes: `hub.config.<Class>` values; secret traits only in the secret values document; start-up code
  as a `hub.extraConfig` entry.

OAuthenticator 17.x is the reference for the trait names (oauthenticator/oauth2.py, generic.py, cilogon.py,
github.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.config.models_auth import CILogonAuth, DummyAuth, GitHubAuth, NativeAuth, OAuthBase, OIDCAuth

NATIVE_AUTHENTICATOR = "nativeauthenticator.NativeAuthenticator"
NATIVE_TEMPLATES = (
    "import os\n"
    "import nativeauthenticator\n"
    "c.JupyterHub.template_paths = [\n"
    "    os.path.join(os.path.dirname(nativeauthenticator.__file__), 'templates')\n"
    "]\n"
)
"""NativeAuthenticator's sign-up pages: its templates must be on JupyterHub's template path."""

CILOGON_AUTHENTICATOR = "oauthenticator.cilogon.CILogonOAuthenticator"
GITHUB_AUTHENTICATOR = "oauthenticator.github.GitHubOAuthenticator"
GENERIC_AUTHENTICATOR = "oauthenticator.generic.GenericOAuthenticator"
OAUTH_CLASSES = {
    "cilogon": "CILogonOAuthenticator",
    "github": "GitHubOAuthenticator",
    "oidc": "GenericOAuthenticator",
}
OAUTH_CALLBACK_PATH = "/hub/oauth_callback"
OIDC_DISCOVERY_TIMEOUT = 10
"""Seconds the hub waits for the issuer's discovery document when it starts."""

OIDC_DISCOVERY = '''\
def _hubfleet_oidc_discovery(issuer, timeout={timeout}):
    """Endpoints from the issuer's discovery document (read when the hub starts)."""
    import json
    import urllib.request

    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            document = json.load(response)
    except Exception as exc:
        raise RuntimeError(
            f"hubfleet: cannot read the OpenID Connect discovery document of issuer {{issuer}} "
            f"({{url}}): {{exc}}; check auth.issuer in the hub file and that the provider is reachable "
            "from the hub"
        ) from None
    missing = [
        key
        for key in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint")
        if not isinstance(document, dict) or not document.get(key)
    ]
    if missing:
        raise RuntimeError(
            f"hubfleet: the discovery document of issuer {{issuer}} ({{url}}) has no {{', '.join(missing)}}"
        )
    return document


_oidc = _hubfleet_oidc_discovery({issuer!r})
c.GenericOAuthenticator.authorize_url = _oidc["authorization_endpoint"]
c.GenericOAuthenticator.token_url = _oidc["token_endpoint"]
c.GenericOAuthenticator.userdata_url = _oidc["userinfo_endpoint"]
'''
"""Start-up code of an oidc hub: rendering stays offline and deterministic; the hub reads the discovery
document itself and refuses to start, naming the issuer, when it cannot."""


def effective_admins(fleet: FleetConfig, hub: Hub) -> list[str]:
    """The hub's admins plus the fleet's staff who have a username for this auth type (unless the hub sets
    `auth.staff_admins: false`)."""
    assert hub.auth is not None
    admins = list(hub.auth.admin_users)
    if not hub.auth.staff_admins:
        return admins
    for operator in fleet.settings.operators:
        name = operator.usernames.get(hub.auth.type)
        if name and name not in admins:
            admins.append(name)
    return admins


def hub_url(fleet: FleetConfig, hub: Hub) -> str:
    """The URL users open (FleetConfig.public_url); a placeholder that cannot resolve while it has none."""
    return fleet.public_url(hub) or f"https://{hub.name}.invalid"


def oauth_callback_url(fleet: FleetConfig, hub: Hub) -> str:
    """What to register at the provider as the redirect (callback) URL."""
    return hub_url(fleet, hub) + OAUTH_CALLBACK_PATH


@dataclass(frozen=True)
class SecretTrait:
    """A trait whose value is a secret: rendered from an environment variable (local) or into the secret
    values document (kubernetes), never into the public text."""

    class_name: str
    trait: str
    env: str
    """Environment variable that carries it into a local hub's process."""
    value: Any
    """The hub's field value: SecretRef, SecretStr or None."""
    label: str
    """What it is, for export placeholders and READMEs."""


@dataclass(frozen=True)
class AuthConfig:
    """A hub's authenticator as JupyterHub configuration, without secret values."""

    authenticator_class: str
    class_name: str
    """The configurable class its settings go to (DummyAuthenticator, GenericOAuthenticator, ...)."""
    traits: dict[str, Any] = field(default_factory=dict)
    secrets: tuple[SecretTrait, ...] = ()
    startup_code: str = ""
    """Python run with the config (`c` in scope) before the traits apply: NativeAuthenticator's templates,
    the oidc discovery."""


AUTH_PACKAGES = {
    "native": ("jupyterhub-nativeauthenticator",),
    "cilogon": ("oauthenticator",),
    "github": ("oauthenticator",),
    "oidc": ("oauthenticator",),
}
"""Python packages a hub needs for its auth type beyond JupyterHub (standalone exports)."""

DUMMY_PASSWORD_ENV = "HUBFLEET_SECRET_DUMMY_PASSWORD"
CLIENT_SECRET_ENV = "HUBFLEET_SECRET_OAUTH_CLIENT_SECRET"


def auth_secrets(hub: Hub) -> tuple[SecretTrait, ...]:
    """The hub's secret traits; they depend on the hub's own auth block only."""
    auth = hub.auth
    if isinstance(auth, DummyAuth):
        # always rendered: without a password set, the empty one lets any password in (staging only)
        return (
            SecretTrait(
                "DummyAuthenticator", "password", DUMMY_PASSWORD_ENV, auth.password, "dummy password"
            ),
        )
    if isinstance(auth, OAuthBase):
        label = f"the client secret of the {auth.type} OAuth client `{auth.client_id}`"
        return (
            SecretTrait(
                OAUTH_CLASSES[auth.type], "client_secret", CLIENT_SECRET_ENV, auth.client_secret, label
            ),
        )
    return ()


def _allow_traits(auth: Any) -> dict[str, Any]:
    """Who may log in besides the admins. Dummy/native: the allow list, or everyone who authenticates.
    OAuth: exactly what the hub file says (the provider-specific lists are added by each type)."""
    traits: dict[str, Any] = {}
    if isinstance(auth, OAuthBase):
        if auth.allowed_users:
            traits["allowed_users"] = sorted(auth.allowed_users)
        traits["allow_all"] = auth.allow_all
        traits["allow_existing_users"] = auth.allow_existing_users
        return traits
    # With no allow list, anyone who can authenticate may use the hub (the shared password, or an approved
    # sign-up); with one, only those users and the admins.
    if auth.allowed_users:
        traits["allowed_users"] = sorted(auth.allowed_users)
    else:
        traits["allow_all"] = True
    if auth.allow_existing_users:
        traits["allow_existing_users"] = True
    return traits


def _cilogon_idps(auth: CILogonAuth) -> dict[str, Any]:
    """CILogonOAuthenticator's per-IdP dict: username_derivation, and allowed_domains or allow_all."""
    idps: dict[str, Any] = {}
    for entity_id in sorted(auth.allowed_idps):
        idp = auth.allowed_idps[entity_id]
        derivation: dict[str, Any] = {"username_claim": idp.username_claim}
        if idp.strip_domain:
            derivation["action"] = "strip_idp_domain"
            derivation["domain"] = idp.strip_domain
        entry: dict[str, Any] = {"username_derivation": derivation}
        if idp.allowed_domains:
            entry["allowed_domains"] = sorted(idp.allowed_domains)
        else:
            entry["allow_all"] = True  # the model: no allowed_domains means everyone of that IdP
        idps[entity_id] = entry
    return idps


def _oauth_config(fleet: FleetConfig, hub: Hub, auth: OAuthBase, traits: dict[str, Any]) -> AuthConfig:
    traits["client_id"] = auth.client_id
    traits["oauth_callback_url"] = oauth_callback_url(fleet, hub)
    secrets = auth_secrets(hub)
    if isinstance(auth, CILogonAuth):
        traits["cilogon_host"] = auth.cilogon_host
        # `allowed_idps`: its name in every OAuthenticator 17.x (17.4 calls it `idps` and still accepts
        # this one), so z2jh hub images with an older 17.x run it too.
        traits["allowed_idps"] = _cilogon_idps(auth)
        return AuthConfig(CILOGON_AUTHENTICATOR, "CILogonOAuthenticator", traits, secrets)
    if isinstance(auth, GitHubAuth):
        if auth.allowed_organizations:
            traits["allowed_organizations"] = sorted(auth.allowed_organizations)
            # read:org: membership of private orgs and of teams is visible only with it
            traits["scope"] = ["read:org"]
        return AuthConfig(GITHUB_AUTHENTICATOR, "GitHubOAuthenticator", traits, secrets)
    if isinstance(auth, OIDCAuth):
        traits["login_service"] = "OpenID Connect"
        traits["username_claim"] = auth.username_claim
        traits["scope"] = list(auth.scopes)
        if auth.allowed_groups:
            # 17.x: groups come from auth_state (the userinfo response is under `oauth_user`) and count only
            # with manage_groups; claim_groups_key is the deprecated name.
            traits["manage_groups"] = True
            traits["auth_state_groups_key"] = f"oauth_user.{auth.groups_claim}"
            traits["allowed_groups"] = sorted(auth.allowed_groups)
        startup = OIDC_DISCOVERY.format(timeout=OIDC_DISCOVERY_TIMEOUT, issuer=auth.issuer)
        return AuthConfig(GENERIC_AUTHENTICATOR, "GenericOAuthenticator", traits, secrets, startup)
    raise ValueError(f"hub {hub.name}: unsupported auth {auth!r}")


def auth_config(fleet: FleetConfig, hub: Hub) -> AuthConfig:
    """Authenticator class and its traits: admins incl. fleet staff, who may log in, provider settings."""
    auth = hub.auth
    traits: dict[str, Any] = {"admin_users": sorted(effective_admins(fleet, hub))}
    traits.update(_allow_traits(auth))
    if isinstance(auth, DummyAuth):
        return AuthConfig("dummy", "DummyAuthenticator", traits, auth_secrets(hub))
    if isinstance(auth, NativeAuth):
        traits["open_signup"] = auth.open_signup
        traits["minimum_password_length"] = auth.minimum_password_length
        return AuthConfig(
            NATIVE_AUTHENTICATOR,
            "NativeAuthenticator",
            traits,
            startup_code=NATIVE_TEMPLATES,
        )
    if isinstance(auth, OAuthBase):
        return _oauth_config(fleet, hub, auth, traits)
    raise ValueError(f"hub {hub.name}: unsupported auth {auth!r}")  # the validator refuses hubs without auth

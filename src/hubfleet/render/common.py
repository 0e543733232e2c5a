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
from hubfleet.config.models_auth import (
    CILogonAuth,
    DummyAuth,
    GitHubAuth,
    NativeAuth,
    OAuthBase,
    OIDCAuth,
    TmpAuth,
)

NATIVE_AUTHENTICATOR = "nativeauthenticator.NativeAuthenticator"
CHECK_USERNAME = "hubfleet-check"
"""The synthetic check's user on every hub."""
CONTROL_SERVICE = "hubfleet"
"""The control plane's JupyterHub service; on native hubs its token also keys the check user's password."""
CHECK_PASSWORD_LABEL = "hubfleet-check native login password v1"
"""HMAC-SHA256(control token, this label), hex: the check user's native password. checks/synthetic.py derives
the same (it holds the token); the password gives nothing the token does not already grant."""

NATIVE_STARTUP = f'''\
import os
import nativeauthenticator
import nativeauthenticator.handlers

c.JupyterHub.template_paths = [
    os.path.join(os.path.dirname(nativeauthenticator.__file__), 'templates')
]


class _HubfleetNoStatsd:
    """JupyterHub 6 removed BaseHandler.statsd; NativeAuthenticator 1.3.0's LoginHandler.post still times
    itself with self.statsd.timer(...).start() / .stop(send=False), which made POST /hub/login answer 500."""

    def timer(self, *args, **kwargs):
        return self

    def start(self):
        return self

    def stop(self, *args, **kwargs):
        return None


if not hasattr(nativeauthenticator.handlers.LoginHandler, 'statsd'):
    nativeauthenticator.handlers.LoginHandler.statsd = _HubfleetNoStatsd()


def _hubfleet_native_reserve(cls, check_user={CHECK_USERNAME!r}, control_service={CONTROL_SERVICE!r}):
    """Admin and staff names are reserved: a sign-up under one is never approved by itself (neither as an
    admin nor by open_signup); an admin approves it at /hub/authorize, an operator with the hub's API. The
    check user cannot sign up at all: hubfleet keeps its password (derived from the control service's
    token) and its approval."""
    if getattr(cls, '_hubfleet_reserved', False):
        return
    import hashlib
    import hmac
    import json

    import bcrypt
    from jupyterhub.apihandlers.base import APIHandler
    from jupyterhub.scopes import needs_scope
    from nativeauthenticator.orm import UserInfo
    from tornado import web

    create_user = cls.create_user
    get_handlers = cls.get_handlers
    authenticate = cls.authenticate
    check_allowed = cls.check_allowed

    def _create_user(self, username, password, **kwargs):
        if self.normalize_username(username) == check_user:
            return None
        info = create_user(self, username, password, **kwargs)
        if info is not None and info.is_authorized and info.username in self.admin_users:
            info.is_authorized = False
            self.db.commit()
        return info

    def _check_password(self):
        for service in getattr(self.parent, 'services', None) or []:
            if service.get('name') == control_service and service.get('api_token'):
                key = service['api_token'].encode()
                return hmac.new(key, {CHECK_PASSWORD_LABEL!r}.encode(), hashlib.sha256).hexdigest()
        return None

    def _ensure_check_user(self):
        password = _check_password(self)
        if password is None:
            return
        info = UserInfo.find(self.db, check_user)
        if info is None:
            info = UserInfo(username=check_user, password=bcrypt.hashpw(password.encode(), bcrypt.gensalt()))
            self.db.add(info)
        elif not info.is_valid_password(password):
            info.password = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
        info.is_authorized = True
        info.has_2fa = False
        self.db.commit()

    async def _authenticate(self, handler, data):
        if self.normalize_username(data.get('username', '')) == check_user:
            _ensure_check_user(self)
        return await authenticate(self, handler, data)

    def _check_allowed(self, username, authentication=None):
        # reached only once the password was right; the check user is no allow list's business
        return username == check_user or check_allowed(self, username, authentication)

    class _HubfleetSignUpAPIHandler(APIHandler):
        """/hub/api/native/users/NAME for tokens (`hubfleet token HUB`; the native pages accept only a
        browser's session): GET a sign-up's state, PATCH {{"authorized": true|false}}, DELETE discards it."""

        def _sign_up(self, user_name):
            info = self.authenticator.get_user(user_name)
            if info is None or info.username == check_user:
                raise web.HTTPError(404, f"no sign-up named {{user_name}}")
            return info

        def _reply(self, info):
            self.finish(json.dumps({{'name': info.username, 'authorized': bool(info.is_authorized)}}))

        @needs_scope('admin:users')
        def get(self, user_name):
            self._reply(self._sign_up(user_name))

        @needs_scope('admin:users')
        def patch(self, user_name):
            authorized = (self.get_json_body() or {{}}).get('authorized')
            if not isinstance(authorized, bool):
                raise web.HTTPError(400, 'expected {{"authorized": true}} or {{"authorized": false}}')
            info = self._sign_up(user_name)
            info.is_authorized = authorized
            self.db.commit()
            self._reply(info)

        @needs_scope('admin:users')
        def delete(self, user_name):
            self.db.delete(self._sign_up(user_name))
            self.db.commit()
            self.set_status(204)
            self.finish()

    def _get_handlers(self, app):
        return [*get_handlers(self, app), (r'/api/native/users/([^/]+)', _HubfleetSignUpAPIHandler)]

    cls.create_user = _create_user
    cls.authenticate = _authenticate
    cls.check_allowed = _check_allowed
    cls.get_handlers = _get_handlers
    cls._hubfleet_reserved = True

    result_message = nativeauthenticator.handlers.SignUpHandler.get_result_message

    def _result_message(self, user, *args):
        # the page says "successful, log in now" to admins and on open sign-up: not for a reserved name
        if user is not None and not user.is_authorized and not user.login_email_sent:
            return "alert-info", "Your information has been sent to the admin."
        return result_message(self, user, *args)

    nativeauthenticator.handlers.SignUpHandler.get_result_message = _result_message


_hubfleet_native_reserve(nativeauthenticator.NativeAuthenticator)
'''
"""Start-up code of a native hub (both backends): NativeAuthenticator's sign-up pages on the template path;
a no-op `statsd` for its login handler on JupyterHub 6 (docs/auth/native.md says why); admin and staff names
reserved; the synthetic check's user kept by hubfleet."""


TMP_AUTHENTICATOR = "tmpauthenticator.TmpAuthenticator"
"""jupyterhub-tmpauthenticator (in the z2jh hub image's requirements, and a dependency of hubfleet for local
hubs); it serves /hub/tmplogin and logs every visitor in as a new uuid user."""
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


GITHUB_TEAMS_AS_GROUPS = '''\
def _hubfleet_github_teams(auth_state):
    """The user's GitHub teams (auth_state["teams"], GitHub's /user/teams at login) as group names
    `org:team`, written as `allowed_organizations` and the environments' `groups` write them."""
    names = set()
    for team in (auth_state or {}).get("teams") or []:
        org = (team.get("organization") or {}).get("login")
        if org and team.get("slug"):
            names.add(f"{org}:{team['slug']}")
    return sorted(names)


c.GitHubOAuthenticator.auth_state_groups_key = _hubfleet_github_teams
'''
"""Start-up code of a GitHub hub whose environments are limited to groups: a callable, so not a value."""


def environments_use_groups(hub: Hub) -> bool:
    """Does any environment, choice or `other` answer of the hub name groups?

    Only then do OAuth hubs take their users' groups from the provider (`manage_groups`): with it on,
    JupyterHub replaces a user's groups with the provider's at every login, so groups that admins manage on
    the hub (its admin page or API) would be emptied for nothing on hubs that do not need them. The groups
    arrive in the login's auth model, so no auth_state is stored and no crypt key is needed for them."""
    for env in hub.environments:
        if env.groups:
            return True
        for option in env.options.values():
            if option.other is not None and option.other.groups:
                return True
            if any(choice.groups for choice in option.choices.values()):
                return True
    return False


def staff_username_key(hub: Hub) -> str:
    """Which key of the operators' `usernames` is the staff's username on this hub: the hub's
    `auth.staff_username_key`, else its auth type."""
    assert hub.auth is not None
    return hub.auth.staff_username_key or hub.auth.type


def effective_admins(fleet: FleetConfig, hub: Hub) -> list[str]:
    """The hub's admins plus the fleet's staff who have a username under this hub's key (its auth type, or
    `auth.staff_username_key`), unless the hub sets `auth.staff_admins: false`."""
    assert hub.auth is not None
    admins = list(hub.auth.admin_users)
    if not hub.auth.staff_admins:
        return admins
    key = staff_username_key(hub)
    for operator in fleet.settings.operators:
        name = operator.usernames.get(key)
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
    "tmp": ("jupyterhub-tmpauthenticator",),
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
    """CILogonOAuthenticator's per-IdP dict: username_derivation, and allowed_domains, allow_all or neither
    (then CILogonOAuthenticator.check_allowed admits only `allowed_users` and the admins from that IdP).
    In the hub file's order: CILogon's login page offers these IdPs and pre-selects the first."""
    idps: dict[str, Any] = {}
    for entity_id in auth.allowed_idps:
        idp = auth.allowed_idps[entity_id]
        derivation: dict[str, Any] = {"username_claim": idp.username_claim}
        if idp.strip_domain:
            derivation["action"] = "strip_idp_domain"
            derivation["domain"] = idp.strip_domain
        elif idp.username_prefix:
            derivation["action"] = "prefix"
            derivation["prefix"] = idp.username_prefix
        entry: dict[str, Any] = {"username_derivation": derivation}
        if idp.allowed_domains:
            entry["allowed_domains"] = sorted(idp.allowed_domains)
        elif idp.allow_all is not False:
            # validation requires `allow_all` when there are no domains; unset is only seen by models built
            # in code, which keep the old meaning (everyone of the IdP)
            entry["allow_all"] = True
        # allow_all: false: neither key, so only `allowed_users` and the admins of this IdP get in
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
        if auth.groups_claim and environments_use_groups(hub):
            # CILogon's user info is under `cilogon_user` in the auth state (CILogonOAuthenticator)
            traits["manage_groups"] = True
            traits["auth_state_groups_key"] = f"cilogon_user.{auth.groups_claim}"
        return AuthConfig(CILOGON_AUTHENTICATOR, "CILogonOAuthenticator", traits, secrets)
    if isinstance(auth, GitHubAuth):
        if auth.allowed_organizations:
            traits["allowed_organizations"] = sorted(auth.allowed_organizations)
        if auth.allowed_organizations or environments_use_groups(hub):
            # read:org: membership of private orgs and of teams is visible only with it
            traits["scope"] = ["read:org"]
        if environments_use_groups(hub):
            # the user's teams (GitHub's /user/teams, fetched at login) become JupyterHub groups `org:team`
            traits["manage_groups"] = True
            traits["populate_teams_in_auth_state"] = True
            return AuthConfig(
                GITHUB_AUTHENTICATOR, "GitHubOAuthenticator", traits, secrets, GITHUB_TEAMS_AS_GROUPS
            )
        return AuthConfig(GITHUB_AUTHENTICATOR, "GitHubOAuthenticator", traits, secrets)
    if isinstance(auth, OIDCAuth):
        traits["login_service"] = "OpenID Connect"
        traits["username_claim"] = auth.username_claim
        traits["scope"] = list(auth.scopes)
        if auth.allowed_groups or environments_use_groups(hub):
            # 17.x: groups come from auth_state (the userinfo response is under `oauth_user`) and count only
            # with manage_groups; claim_groups_key is the deprecated name. With manage_groups the user's
            # JupyterHub groups are the claim's at each login (what the environments' gate reads).
            traits["manage_groups"] = True
            traits["auth_state_groups_key"] = f"oauth_user.{auth.groups_claim}"
        if auth.allowed_groups:
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
    if isinstance(auth, TmpAuth):
        # every visitor is a fresh uuid user: nobody to list, so everyone is allowed (JupyterHub 5+ would
        # refuse them all without allow_all)
        return AuthConfig(TMP_AUTHENTICATOR, "TmpAuthenticator", traits)
    if isinstance(auth, NativeAuth):
        traits["open_signup"] = auth.open_signup
        traits["minimum_password_length"] = auth.minimum_password_length
        return AuthConfig(
            NATIVE_AUTHENTICATOR,
            "NativeAuthenticator",
            traits,
            startup_code=NATIVE_STARTUP,
        )
    if isinstance(auth, OAuthBase):
        return _oauth_config(fleet, hub, auth, traits)
    raise ValueError(f"hub {hub.name}: unsupported auth {auth!r}")  # the validator refuses hubs without auth

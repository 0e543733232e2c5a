"""The `auth` of a hub: who may log in and who is an admin, one model per authenticator.

They are the largest group of models and the one the auth rules and the auth rendering work on, so they are
kept apart from the other hub settings (`config.models`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from hubfleet.config.fields import URL_PATTERN, GroupName, Strict, Username
from hubfleet.config.secret_refs import SecretOnly, SecretOrPlain

AUTH_TYPES = ("dummy", "native", "cilogon", "github", "oidc", "tmp")

StaffUsernameKey = Annotated[
    str,
    Field(
        pattern=r"^(dummy|native|cilogon|github|oidc|tmp)(:[a-z0-9][a-z0-9-]*)?$",
        description="An auth type, optionally with a label after a colon: cilogon, cilogon:google.",
    ),
]
"""A key of an operator's `usernames`: the auth type, or `TYPE:LABEL` when staff have several usernames for
one type (one per identity provider of a CILogon hub, say)."""


def check_staff_username_keys(usernames: object) -> object:
    """A clear error for a key of `usernames` that is no auth type (before the pattern's terse one)."""
    if isinstance(usernames, dict):
        for key in usernames:
            kind = str(key).split(":", 1)[0]
            if kind not in AUTH_TYPES:
                raise ValueError(
                    f"'{key}' is not an auth type: write one of {', '.join(AUTH_TYPES)}, or TYPE:LABEL such "
                    "as cilogon:google for staff with several usernames of one type"
                )
    return usernames


class AuthBase(Strict):
    admin_users: list[Username] = Field(
        default_factory=list, description="Users who are admins of the hub. Must not be empty."
    )
    allowed_users: list[Username] = Field(
        default_factory=list, description="Users allowed to log in, in addition to the admins."
    )
    allow_existing_users: bool = Field(
        default=False,
        description="Users already in the hub's database (for example added by an admin) may log in too.",
    )
    staff_admins: bool = Field(
        default=True,
        description="Make the fleet's operators (fleet.yaml `operators[].usernames`) admins on this hub.",
    )
    staff_username_key: StaffUsernameKey | None = Field(
        default=None,
        description="Which of the operators' usernames (fleet.yaml `operators[].usernames`) this hub's staff "
        "admins are, for operators with several for one auth type: a key such as `cilogon:google`. Unset: "
        "the key named by the auth type (`cilogon`). An operator without that key is no admin here.",
    )


class DummyAuth(AuthBase):
    """A shared password for everyone: for tests and staging only, refused on prod hubs."""

    type: Literal["dummy"]
    password: SecretOrPlain | None = Field(
        default=None,
        description="Shared password, in plain text or as {secret: KEY}. "
        "Without it any password is accepted (staging only).",
    )
    groups: dict[GroupName, list[Username]] = Field(
        default_factory=dict,
        description="Hub groups and their members, for environments and choices limited to groups.",
    )


class NativeAuth(AuthBase):
    """Users sign up on the hub and an admin approves them (jupyterhub-nativeauthenticator)."""

    type: Literal["native"]
    open_signup: bool = Field(default=False, description="Approve sign-ups without an admin.")
    minimum_password_length: int = Field(default=8, ge=1, le=128)
    groups: dict[GroupName, list[Username]] = Field(
        default_factory=dict,
        description="Hub groups and their members, for environments and choices limited to groups.",
    )


OAUTH_TYPES = ("cilogon", "github", "oidc")


class OAuthBase(AuthBase):
    """Settings every OAuth provider shares; the callback URL is derived from the hub's URL."""

    client_id: str = Field(
        min_length=1, description="The client (application) id registered at the provider."
    )
    client_secret: SecretOnly | None = Field(
        default=None,
        description="The client secret, always as {secret: KEY} "
        "(set it with `hubfleet secrets set HUB KEY`).",
    )
    allow_all: bool = Field(
        default=False, description="Anyone who can log in at the provider may use the hub (no allow list)."
    )


class CILogonIdP(Strict):
    """One identity provider allowed through CILogon, keyed by its CILogon entity ID."""

    username_claim: Literal["email", "eppn", "eptid", "oidc", "sub", "preferred_username"] = Field(
        description="The claim that becomes the hub username."
    )
    allowed_domains: list[str] = Field(
        default_factory=list,
        description="Only users whose username_claim ends in @ one of these domains "
        "(empty: everyone of the IdP).",
    )
    allow_all: bool | None = Field(
        default=None,
        description="true: every user of this IdP may log in; false: only the hub's `allowed_users` (and "
        "admins) of it. Required unless `allowed_domains` is set (an IdP never admits everyone silently).",
    )
    strip_domain: str | None = Field(
        default=None, description="Remove @this-domain from usernames, e.g. uni.edu: alice@uni.edu -> alice."
    )
    username_prefix: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Prefix usernames of this IdP with `PREFIX:` (e.g. staff: staff:alice@service.org), so "
        "that they never collide with users of another IdP; not with strip_domain.",
    )

    @model_validator(mode="after")
    def _one_username_action(self) -> CILogonIdP:
        if self.strip_domain and self.username_prefix:
            raise ValueError(
                "strip_domain and username_prefix both change the username; CILogon applies one: keep one"
            )
        if self.allow_all and self.allowed_domains:
            raise ValueError(
                "allow_all: true admits every user of this IdP, so allowed_domains would restrict nothing; "
                "remove one"
            )
        return self


class CILogonAuth(OAuthBase):
    """Institutional login through CILogon (OAuthenticator's CILogonOAuthenticator)."""

    type: Literal["cilogon"]
    allowed_idps: dict[str, CILogonIdP] = Field(
        default_factory=dict,
        description="Identity providers allowed to log in, keyed by CILogon entity ID "
        "(e.g. https://idp.uni.edu/idp/shibboleth).",
    )
    cilogon_host: str = Field(
        default="cilogon.org", description="CILogon host; test.cilogon.org for testing."
    )
    groups_claim: str | None = Field(
        default=None,
        min_length=1,
        description="Claim listing the user's groups, for environments limited to groups. cilogon: unset "
        "by default; CILogon sends `isMemberOf` (org.cilogon.userinfo scope) when the IdP releases it. "
        "oidc: `groups` by default.",
    )


class GitHubAuth(OAuthBase):
    """GitHub accounts, limited to organizations or teams (OAuthenticator's GitHubOAuthenticator)."""

    type: Literal["github"]
    allowed_organizations: list[
        Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]*(:[A-Za-z0-9_.-]+)?$")]
    ] = Field(default_factory=list, description="Entries `org` or `org:team-slug`; members may log in.")


class OIDCAuth(OAuthBase):
    """Any OpenID Connect provider, configured from its discovery document (GenericOAuthenticator)."""

    type: Literal["oidc"]
    issuer: str = Field(
        pattern=URL_PATTERN,
        description="Issuer URL; its /.well-known/openid-configuration is read when the hub starts. "
        "https is required on prod hubs (http only for loopback).",
    )
    username_claim: str = Field(
        default="preferred_username", min_length=1, description="Claim used as the username."
    )
    scopes: list[str] = Field(
        default_factory=lambda: ["openid", "profile", "email"], description="Scopes to request."
    )
    groups_claim: str = Field(default="groups", min_length=1, description="Claim listing the user's groups.")
    allowed_groups: list[str] = Field(default_factory=list, description="Members of these groups may log in.")


class TmpAuth(AuthBase):
    """Temporary anonymous users for workshops: every visitor gets a fresh user and a server at once
    (JupyterHub's TmpAuthenticator). Nobody signs in, so `admin_users` only name who may use the API; refused
    on prod hubs unless `allow_on_prod: true`."""

    type: Literal["tmp"]
    allow_on_prod: bool = Field(
        default=False,
        description="Let a prod hub hand out anonymous users (a public workshop hub); anyone who opens it "
        "gets a server, so set `max_users` and culling.",
    )


Auth = Annotated[
    DummyAuth | NativeAuth | CILogonAuth | GitHubAuth | OIDCAuth | TmpAuth, Field(discriminator="type")
]
"""A hub's `auth`: one of the models above, chosen by `type`."""

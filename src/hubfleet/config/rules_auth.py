"""Cross-file rules on who may log in: each hub's `auth` (admins, OAuth clients and allow lists, https
to the identity provider on prod) and the web console's accounts and sign-in.

Each rule is a small function of the loaded fleet returning ConfigErrors; `config.rules` lists them all.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from hubfleet.config.fleet import ConfigError
from hubfleet.config.loader import HubEntry, SourcedFleetConfig
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
from hubfleet.suggest import did_you_mean

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def has_auth(fleet: SourcedFleetConfig) -> list[ConfigError]:
    return [
        fleet.hub_error(
            e,
            "auth",
            f"auth: hub '{e.hub.name}' has no auth; "
            "set `auth:` in the hub file or in `defaults` in fleet.yaml",
        )
        for e in fleet.hub_entries
        if e.hub.auth is None
    ]


def admins_not_empty(fleet: SourcedFleetConfig) -> list[ConfigError]:
    return [
        fleet.hub_error(
            e,
            "auth.admin_users",
            f"auth.admin_users: hub '{e.hub.name}' has no admin users; list at least one",
        )
        for e in fleet.hub_entries
        # a tmp hub's visitors are anonymous and nobody signs in as an admin: its admins are optional
        if e.hub.auth is not None and not e.hub.auth.admin_users and e.hub.auth.type != "tmp"
    ]


def no_dummy_auth_on_prod(fleet: SourcedFleetConfig) -> list[ConfigError]:
    return [
        fleet.hub_error(
            e,
            "auth.type",
            f"auth.type: dummy auth is refused on prod hub '{e.hub.name}'; use `type: native`",
        )
        for e in fleet.hub_entries
        if e.hub.stage == "prod" and e.hub.auth is not None and e.hub.auth.type == "dummy"
    ]


def _oauth_entries(fleet: SourcedFleetConfig) -> Iterable[tuple[HubEntry, OAuthBase]]:
    for entry in fleet.hub_entries:
        if isinstance(entry.hub.auth, OAuthBase):
            yield entry, entry.hub.auth


def oauth_client_secret_set(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """An OAuth hub needs its client secret (as `{secret: KEY}`; plain text is refused by the model)."""
    return [
        fleet.hub_error(
            entry,
            "auth.client_secret",
            f"auth.client_secret: {auth.type} hub '{entry.hub.name}' needs the client secret of "
            f"'{auth.client_id}'; add `client_secret: {{secret: client_secret}}` under auth and run "
            f"`hubfleet secrets set {entry.hub.name} client_secret`",
        )
        for entry, auth in _oauth_entries(fleet)
        if auth.client_secret is None
    ]


def _allow_lists(auth: OAuthBase) -> list[str]:
    """The keys of `auth` that restrict who may log in and are set."""
    names = ["allowed_users"] if auth.allowed_users else []
    if isinstance(auth, GitHubAuth) and auth.allowed_organizations:
        names.append("allowed_organizations")
    if isinstance(auth, OIDCAuth) and auth.allowed_groups:
        names.append("allowed_groups")
    return names


def allow_all_without_allow_lists(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """`allow_all: true` lets every account of the provider in, so an allow list next to it restricts
    nothing: the file says two contradicting things and the permissive one would win silently."""
    errors = []
    for entry, auth in _oauth_entries(fleet):
        lists = _allow_lists(auth)
        if auth.allow_all and lists:
            keys = " and ".join(f"`{name}`" for name in lists)
            errors.append(
                fleet.hub_error(
                    entry,
                    "auth.allow_all",
                    f"auth.allow_all: true lets every {auth.type} account into hub '{entry.hub.name}', so "
                    f"{keys} would restrict nothing; remove `allow_all` or the list",
                )
            )
    return errors


def github_allow_lists_consistent(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """A GitHub hub's `allowed_users` and `allowed_organizations` must not contradict each other:

    - a name in both: GitHub users and organizations share one namespace, so a login cannot be both a
      user to allow and an organization whose members to allow;
    - an `allowed_users` entry with ':' (`org:team`): no GitHub login contains ':'; it belongs in
      `allowed_organizations`;
    - `org:team` next to `org` in `allowed_organizations`: every member of `org` is already allowed, so the
      team restricts nothing.
    """
    errors = []
    for entry, auth in _oauth_entries(fleet):
        if not isinstance(auth, GitHubAuth):
            continue
        # GitHub logins are case-insensitive
        orgs = {item.split(":", 1)[0].lower() for item in auth.allowed_organizations}
        whole_orgs = {item.lower() for item in auth.allowed_organizations if ":" not in item}
        for i, user in enumerate(auth.allowed_users):
            if ":" in user:
                message = (
                    f"'{user}' is an organization team (org:team), not a GitHub login; "
                    "move it to `allowed_organizations`"
                )
            elif user.lower() in orgs:
                message = (
                    f"'{user}' is also in `allowed_organizations`; GitHub users and organizations share "
                    "one namespace, so it cannot be both: keep it in one list"
                )
            else:
                continue
            errors.append(
                fleet.hub_error(entry, f"auth.allowed_users.{i}", f"auth.allowed_users[{i}]: {message}")
            )
        for i, item in enumerate(auth.allowed_organizations):
            org, _, team = item.partition(":")
            if team and org.lower() in whole_orgs:
                errors.append(
                    fleet.hub_error(
                        entry,
                        f"auth.allowed_organizations.{i}",
                        f"auth.allowed_organizations[{i}]: team '{item}' restricts nothing: every member "
                        f"of '{org}' is already allowed; remove '{item}' or '{org}'",
                    )
                )
    return errors


def oidc_issuer_https_on_prod(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """A prod hub reads its identity provider over https; http only for a provider on loopback."""
    errors = []
    for entry, auth in _oauth_entries(fleet):
        if not isinstance(auth, OIDCAuth) or entry.hub.stage != "prod":
            continue
        url = urlsplit(auth.issuer)
        if url.scheme != "https" and url.hostname not in LOOPBACK_HOSTS:
            errors.append(
                fleet.hub_error(
                    entry,
                    "auth.issuer",
                    f"auth.issuer: prod hub '{entry.hub.name}' must reach its identity provider over "
                    f"https, not '{auth.issuer}' (http only for 127.0.0.1, localhost or ::1)",
                )
            )
    return errors


def cilogon_has_idps(fleet: SourcedFleetConfig) -> list[ConfigError]:
    return [
        fleet.hub_error(
            entry,
            "auth.allowed_idps",
            f"auth.allowed_idps: cilogon hub '{entry.hub.name}' allows no identity provider; add one, "
            "keyed by its CILogon entity ID (https://cilogon.org/idplist), e.g. "
            "`https://idp.uni.edu/idp/shibboleth: {username_claim: eppn}`",
        )
        for entry, auth in _oauth_entries(fleet)
        if isinstance(auth, CILogonAuth) and not auth.allowed_idps
    ]


def someone_can_log_in(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """An OAuth hub must let someone besides its admins in: `allow_all`, an allow list, or
    `allow_existing_users` (admins add users on the admin page). A cilogon hub lets in the users of its
    `allowed_idps` (reported by `cilogon_has_idps` when empty)."""
    errors = []
    for entry, auth in _oauth_entries(fleet):
        if isinstance(auth, CILogonAuth) or auth.allow_all or auth.allow_existing_users or _allow_lists(auth):
            continue
        options = ["`allowed_users`"]
        if isinstance(auth, GitHubAuth):
            options.append("`allowed_organizations`")
        if isinstance(auth, OIDCAuth):
            options.append("`allowed_groups`")
        options += ["`allow_existing_users: true` (admins add users on the admin page)", "`allow_all: true`"]
        errors.append(
            fleet.hub_error(
                entry,
                "auth",
                f"auth: nobody but the admins can log in to {auth.type} hub '{entry.hub.name}'; "
                f"add {', '.join(options[:-1])} or {options[-1]}",
            )
        )
    return errors


def console_accounts_know_their_communities(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """A community-leader's communities exist (a typo would silently show them nothing)."""
    if fleet.fleet_source is None or fleet.settings is None:
        return []
    known = set(fleet.communities) | fleet.broken_names
    errors = []
    for i, account in enumerate(fleet.settings.console.accounts):
        for j, community in enumerate(account.communities):
            if community not in known:
                dotted = f"console.accounts.{i}.communities.{j}"
                hint = did_you_mean(community, fleet.communities, "communities")
                errors.append(
                    fleet.fleet_error(
                        dotted,
                        f"{dotted}: community '{community}' of '{account.username}' does not exist; {hint}",
                    )
                )
    return errors


def console_oidc_issuer_https(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """The console trusts what its provider's token endpoint says: https, or a provider on loopback."""
    if fleet.fleet_source is None or fleet.settings is None or fleet.settings.console.oidc is None:
        return []
    url = urlsplit(fleet.settings.console.oidc.issuer)
    if url.scheme == "https" or url.hostname in LOOPBACK_HOSTS:
        return []
    return [
        fleet.fleet_error(
            "console.oidc.issuer",
            f"console.oidc.issuer: the console must reach its identity provider over https, not "
            f"'{fleet.settings.console.oidc.issuer}' (http only for 127.0.0.1, localhost or ::1)",
        )
    ]


def tmp_auth_where_allowed(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """Anonymous users (`type: tmp`) hand a server to whoever opens the hub: staging hubs, or a prod hub that
    says `allow_on_prod: true`. Nobody signs in, so an allow list would restrict nothing."""
    errors = []
    for entry in fleet.hub_entries:
        auth = entry.hub.auth
        if not isinstance(auth, TmpAuth):
            continue
        if entry.hub.stage == "prod" and not auth.allow_on_prod:
            errors.append(
                fleet.hub_error(
                    entry,
                    "auth.type",
                    f"auth.type: tmp auth gives anyone who opens prod hub '{entry.hub.name}' a server; "
                    "set `allow_on_prod: true` under auth if this is a public workshop hub (with max_users "
                    "and culling), or use another auth type",
                )
            )
        if auth.allowed_users or auth.allow_existing_users:
            key = "allowed_users" if auth.allowed_users else "allow_existing_users"
            errors.append(
                fleet.hub_error(
                    entry,
                    f"auth.{key}",
                    f"auth.{key}: tmp hub '{entry.hub.name}' logs every visitor in as a new random user, so "
                    f"`{key}` would restrict nothing; remove it",
                )
            )
    return errors


def cilogon_idps_say_who(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """Each CILogon IdP says whom of its users it admits: `allowed_domains`, `allow_all: true` (everyone) or
    `allow_all: false` (only `allowed_users` and the admins: an IdP for the staff alone, who are admins, is
    that); never everyone by omission. A hub-wide
    `allow_all: true` admits everyone of every IdP, so a restricted IdP next to it would restrict nothing."""
    errors = []
    for entry, auth in _oauth_entries(fleet):
        if not isinstance(auth, CILogonAuth):
            continue
        for entity_id, idp in auth.allowed_idps.items():
            dotted = "auth.allowed_idps"  # entity IDs hold dots: the error points at the block
            if not idp.allowed_domains and idp.allow_all is None:
                errors.append(
                    fleet.hub_error(
                        entry,
                        dotted,
                        f"auth.allowed_idps['{entity_id}']: say whom of this IdP hub '{entry.hub.name}' "
                        "admits: `allowed_domains: [uni.edu]` (users of those domains), `allow_all: true` "
                        "(every user of the IdP) or `allow_all: false` (only auth.allowed_users and the "
                        "admins)",
                    )
                )
            restricted = idp.allowed_domains or idp.allow_all is False
            if auth.allow_all and restricted:
                errors.append(
                    fleet.hub_error(
                        entry,
                        "auth.allow_all",
                        f"auth.allow_all: true admits every user of every IdP into hub '{entry.hub.name}', "
                        f"so the restrictions of IdP '{entity_id}' would restrict nothing; remove "
                        "`allow_all` (each IdP says whom it admits)",
                    )
                )
    return errors


def staff_username_key_known(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """A hub's `auth.staff_username_key` is of its auth type and some operator has a username under it (a
    typo would silently leave the staff without admin rights there)."""
    if fleet.settings is None:
        return []
    keys = {key for operator in fleet.settings.operators for key in operator.usernames}
    errors = []
    for entry in fleet.hub_entries:
        auth = entry.hub.auth
        if auth is None or auth.staff_username_key is None:
            continue
        key = auth.staff_username_key
        if key.split(":", 1)[0] != auth.type:
            message = (
                f"'{key}' is not a key of {auth.type} usernames; write `{auth.type}` or "
                f"`{auth.type}:LABEL` (as in fleet.yaml operators[].usernames)"
            )
        elif key not in keys and auth.staff_admins:
            known = sorted(k for k in keys if k.split(":", 1)[0] == auth.type)
            hint = f"operators have: {', '.join(known)}" if known else "none has a username of this type"
            message = f"no operator has a username under '{key}' in fleet.yaml ({hint})"
        else:
            continue
        errors.append(
            fleet.hub_error(entry, "auth.staff_username_key", f"auth.staff_username_key: {message}")
        )
    return errors


def environment_groups(hub: Hub) -> list[tuple[str, str]]:
    """(dotted path, group name) of every group an environment, choice or `other` answer of the hub names."""
    found = []
    for i, env in enumerate(hub.environments):
        found += [(f"environments.{i}.groups", name) for name in env.groups]
        for slug, option in env.options.items():
            for choice_slug, choice in option.choices.items():
                path = f"environments.{i}.options.{slug}.choices.{choice_slug}.groups"
                found += [(path, name) for name in choice.groups]
            if option.other is not None:
                found += [(f"environments.{i}.options.{slug}.other.groups", n) for n in option.other.groups]
    return found


def environment_groups_have_a_source(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """A group named by an environment must be one users can be in: a hub group of a dummy or native hub, a
    GitHub team (`org:team`), a CILogon hub's groups claim; a tmp hub's visitors are in none."""
    errors = []
    for entry in fleet.hub_entries:
        auth = entry.hub.auth
        for path, name in environment_groups(entry.hub):
            problem = None
            if isinstance(auth, TmpAuth):
                problem = "a tmp hub's anonymous visitors are in no group; remove `groups`"
            elif isinstance(auth, DummyAuth | NativeAuth) and name not in auth.groups:
                known = ", ".join(sorted(auth.groups)) or "none"
                problem = (
                    f"'{name}' is not one of the hub's groups (auth.groups: {known}); define it there "
                    "with its members"
                )
            elif isinstance(auth, GitHubAuth) and ":" not in name:
                problem = (
                    f"'{name}' is no GitHub team: a GitHub hub's groups are its users' teams, written "
                    "org:team (such as research-lab:gpu-users)"
                )
            elif isinstance(auth, CILogonAuth) and not auth.groups_claim:
                problem = (
                    f"group '{name}' needs the users' groups from CILogon: set auth.groups_claim "
                    "(CILogon sends them as isMemberOf when the IdP releases them)"
                )
            if problem:
                errors.append(fleet.hub_error(entry, path, f"{_bracketed(path)}: {problem}"))
    return errors


def _bracketed(path: str) -> str:
    """environments.0.options.size.choices.gpu.groups -> environments[0].options.size.choices.gpu.groups"""
    return ".".join(f"[{p}]" if p.isdigit() else p for p in path.split(".")).replace(".[", "[")

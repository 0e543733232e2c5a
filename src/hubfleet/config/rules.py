"""Cross-file rules on a loaded fleet: each rule is a small function returning ConfigErrors.

Rules see every hub that validated on its own (`SourcedFleetConfig.hub_entries`, duplicates included) and
point at the offending key through `locate_in`, so their errors carry the same `file:line:col` as schema
errors.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from hubfleet.config.fleet import ConfigError
from hubfleet.config.loader import HubEntry, SourcedFleetConfig, locate_in
from hubfleet.config.models import CILogonAuth, GitHubAuth, OAuthBase, OIDCAuth
from hubfleet.config.secret_refs import secret_refs

Rule = Callable[[SourcedFleetConfig], list[ConfigError]]


def _error(fleet: SourcedFleetConfig, entry: HubEntry, dotted: str, message: str) -> ConfigError:
    file, line, col = locate_in(entry.source, fleet.fleet_source, dotted)
    return ConfigError(file, line, col, message)


def _fleet_error(fleet: SourcedFleetConfig, dotted: str, message: str) -> ConfigError:
    assert fleet.fleet_source is not None
    path = [int(p) if p.isdigit() else p for p in dotted.split(".")]
    _, key_pos, _ = fleet.fleet_source.find(path)
    return ConfigError(fleet.fleet_source.file, *key_pos, message)


def _did_you_mean(name: str, known: Iterable[str], what: str) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    if known:
        return f"known {what}: {', '.join(known)}"
    return f"no {what} are defined"


def unique_hub_names(fleet: SourcedFleetConfig) -> list[ConfigError]:
    first: dict[str, HubEntry] = {}
    errors = []
    for entry in fleet.hub_entries:
        name = entry.hub.name
        if name in first:
            errors.append(
                _error(
                    fleet,
                    entry,
                    "name",
                    f"name: hub name '{name}' is already used by {first[name].source.file}; "
                    "hub names must be unique in the fleet",
                )
            )
        else:
            first[name] = entry
    return errors


def _unique_value(fleet: SourcedFleetConfig, key: str, hint: str) -> list[ConfigError]:
    first: dict[object, HubEntry] = {}
    errors = []
    for entry in fleet.hub_entries:
        value = getattr(entry.hub, key)
        if value is None:
            continue
        if value in first:
            other = first[value]
            errors.append(
                _error(
                    fleet,
                    entry,
                    key,
                    f"{key}: {value} is already used by hub '{other.hub.name}' ({other.source.file}); {hint}",
                )
            )
        else:
            first[value] = entry
    return errors


def unique_ports(fleet: SourcedFleetConfig) -> list[ConfigError]:
    return _unique_value(fleet, "port", "give each hub its own port")


def unique_domains(fleet: SourcedFleetConfig) -> list[ConfigError]:
    return _unique_value(fleet, "domain", "give each hub its own domain")


def references_resolve(fleet: SourcedFleetConfig) -> list[ConfigError]:
    errors = []
    for entry in fleet.hub_entries:
        hub = entry.hub
        # With no valid cluster at all, that is reported once (clusters/) rather than for every hub.
        if fleet.clusters and hub.cluster not in fleet.clusters and hub.cluster not in fleet.broken_names:
            hint = _did_you_mean(hub.cluster, fleet.clusters, "clusters")
            errors.append(
                _error(fleet, entry, "cluster", f"cluster: unknown cluster '{hub.cluster}'; {hint}")
            )
        if hub.community != entry.directory:
            if hub.community in fleet.communities or hub.community in fleet.broken_names:
                errors.append(
                    _error(
                        fleet,
                        entry,
                        "community",
                        f"community: '{hub.community}' does not match the directory "
                        f"communities/{entry.directory}/; set `community: {entry.directory}` "
                        f"or move the file to communities/{hub.community}/hubs/",
                    )
                )
            else:
                hint = _did_you_mean(hub.community, fleet.communities, "communities")
                errors.append(
                    _error(
                        fleet, entry, "community", f"community: unknown community '{hub.community}'; {hint}"
                    )
                )
    return errors


def port_or_domain_by_cluster_kind(fleet: SourcedFleetConfig) -> list[ConfigError]:
    errors = []
    for entry in fleet.hub_entries:
        hub = entry.hub
        cluster = fleet.clusters.get(hub.cluster)
        if cluster is None:
            continue
        if cluster.kind == "local":
            if hub.port is None:
                errors.append(
                    _error(
                        fleet,
                        entry,
                        "port",
                        f"port: required for hubs on local cluster '{cluster.name}'; "
                        "add `port: <1024-65535>`",
                    )
                )
            if hub.domain is not None:
                errors.append(
                    _error(
                        fleet,
                        entry,
                        "domain",
                        f"domain: hubs on local cluster '{cluster.name}' are served on 127.0.0.1:<port>; "
                        "remove domain",
                    )
                )
        else:
            if hub.domain is None:
                errors.append(
                    _error(
                        fleet,
                        entry,
                        "domain",
                        f"domain: required for hubs on kubernetes cluster '{cluster.name}'; "
                        "add `domain: <hub.example.org>`",
                    )
                )
            if hub.port is not None:
                errors.append(
                    _error(
                        fleet,
                        entry,
                        "port",
                        f"port: hubs on kubernetes cluster '{cluster.name}' are served on their domain; "
                        "remove port",
                    )
                )
    return errors


def prod_has_staging(fleet: SourcedFleetConfig) -> list[ConfigError]:
    staging = {(e.hub.community, e.hub.cluster) for e in fleet.hub_entries if e.hub.stage == "staging"}
    errors = []
    for entry in fleet.hub_entries:
        hub = entry.hub
        known = (
            hub.cluster in fleet.clusters
            and hub.community == entry.directory
            and entry.directory not in fleet.broken_hub_dirs
        )
        if hub.stage == "prod" and known and (hub.community, hub.cluster) not in staging:
            errors.append(
                _error(
                    fleet,
                    entry,
                    "stage",
                    f"stage: prod hub '{hub.name}' needs a staging hub of community '{hub.community}' "
                    f"on cluster '{hub.cluster}' to deploy to first; "
                    f"add one in communities/{entry.directory}/hubs/",
                )
            )
    return errors


def has_auth(fleet: SourcedFleetConfig) -> list[ConfigError]:
    return [
        _error(
            fleet,
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
        _error(
            fleet,
            e,
            "auth.admin_users",
            f"auth.admin_users: hub '{e.hub.name}' has no admin users; list at least one",
        )
        for e in fleet.hub_entries
        if e.hub.auth is not None and not e.hub.auth.admin_users
    ]


def no_dummy_auth_on_prod(fleet: SourcedFleetConfig) -> list[ConfigError]:
    return [
        _error(
            fleet,
            e,
            "auth.type",
            f"auth.type: dummy auth is refused on prod hub '{e.hub.name}'; use `type: native`",
        )
        for e in fleet.hub_entries
        if e.hub.stage == "prod" and e.hub.auth is not None and e.hub.auth.type == "dummy"
    ]


def kubernetes_settings_on_kubernetes_hubs(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """A local hub's own file must not set `kubernetes` (inherited fleet defaults are ignored there)."""
    errors = []
    for entry in fleet.hub_entries:
        cluster = fleet.clusters.get(entry.hub.cluster)
        # the text test spares parsing positions (slow) for the many files that cannot set the key
        if cluster is None or cluster.kind != "local" or "kubernetes" not in entry.source.text:
            continue
        depth, _, _ = entry.source.find(["kubernetes"])
        if depth == 1:
            errors.append(
                _error(
                    fleet,
                    entry,
                    "kubernetes",
                    f"kubernetes: kubernetes settings on a hub of local cluster '{cluster.name}'; "
                    "remove them or move the hub to a kubernetes cluster",
                )
            )
    return errors


def profiles_consistent(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """Profile slugs are unique within a hub and at most one profile is the default."""
    errors = []
    for entry in fleet.hub_entries:
        settings = entry.hub.kubernetes
        if settings is None:
            continue
        seen: dict[str, int] = {}
        first_default: int | None = None
        for i, profile in enumerate(settings.profiles):
            if profile.slug in seen:
                errors.append(
                    _error(
                        fleet,
                        entry,
                        f"kubernetes.profiles.{i}.slug",
                        f"kubernetes.profiles[{i}].slug: '{profile.slug}' is already used by "
                        f"profiles[{seen[profile.slug]}]; give each profile its own slug",
                    )
                )
            else:
                seen[profile.slug] = i
            if profile.default:
                if first_default is None:
                    first_default = i
                else:
                    errors.append(
                        _error(
                            fleet,
                            entry,
                            f"kubernetes.profiles.{i}.default",
                            f"kubernetes.profiles[{i}].default: profiles[{first_default}] is already the "
                            "default; at most one profile may set `default: true`",
                        )
                    )
    return errors


def secrets_files_match_hubs(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """communities/<c>/secrets/<hub>.yaml must belong to a hub of community <c>."""
    errors = []
    for entry in fleet.secret_entries:
        hub = fleet.hubs.get(entry.hub_name)
        if hub is None:
            if entry.hub_name in fleet.broken_names:
                continue
            hint = _did_you_mean(entry.hub_name, fleet.hubs, "hubs")
            message = (
                f"secrets file of unknown hub '{entry.hub_name}'; a secrets file is named after a hub of its "
                f"community (communities/{entry.directory}/hubs/{entry.hub_name}.yaml): rename or delete it; "
                f"{hint}"
            )
        elif hub.community != entry.directory:
            message = (
                f"hub '{entry.hub_name}' belongs to community '{hub.community}'; "
                f"move this file to communities/{hub.community}/secrets/{entry.hub_name}.yaml"
            )
        else:
            continue
        errors.append(ConfigError(entry.source.file, 1, 1, message))
    return errors


def secret_refs_are_set(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """Every `{secret: KEY}` of a hub names a key of its secrets file (checked without decrypting)."""
    stored = {(e.directory, e.hub_name): set(e.values) | e.malformed for e in fleet.secret_entries}
    errors = []
    for entry in fleet.hub_entries:
        keys = stored.get((entry.directory, entry.hub.name), set())
        for dotted, ref in secret_refs(entry.hub):
            if ref.secret not in keys:
                name = entry.hub.name
                errors.append(
                    _error(
                        fleet,
                        entry,
                        dotted,
                        f"{dotted}: secret '{ref.secret}' is not set for hub '{name}'; "
                        f"run `hubfleet secrets set {name} {ref.secret}`",
                    )
                )
    return errors


def fleet_secret_refs_are_set(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """Every `{secret: KEY}` of fleet.yaml `monitoring` (alert channels) and `console` (OIDC client) names
    a key of secrets/fleet.yaml."""
    if fleet.fleet_source is None or fleet.settings is None:
        return []
    entry = fleet.fleet_secret_entry
    keys = set(entry.values) | entry.malformed if entry else set()
    errors = []
    refs = [
        *secret_refs(fleet.settings.monitoring, "monitoring"),
        *secret_refs(fleet.settings.console, "console"),
    ]
    for dotted, ref in refs:
        if ref.secret not in keys:
            errors.append(
                _fleet_error(
                    fleet,
                    dotted,
                    f"{dotted}: fleet-level secret '{ref.secret}' is not set in secrets/fleet.yaml; "
                    f"run `hubfleet secrets set --fleet-level {ref.secret}`",
                )
            )
    return errors


def secrets_have_recipients(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """Secrets in use need at least one operator who can decrypt them."""
    in_use = (
        any(e.values for e in fleet.secret_entries)
        or any(secret_refs(e.hub) for e in fleet.hub_entries)
        or bool(fleet.fleet_secrets)
        or (fleet.settings is not None and bool(secret_refs(fleet.settings.monitoring)))
    )
    if not in_use or fleet.fleet_source is None or any(op.age_recipient for op in fleet.settings.operators):
        return []
    depth, key_pos, _ = fleet.fleet_source.find(["operators"])
    line, col = key_pos if depth else fleet.fleet_source.first_key()
    return [
        ConfigError(
            fleet.fleet_source.file,
            line,
            col,
            "operators: hub secrets are in use but no operator has an age_recipient; run "
            "`hubfleet secrets keygen` and add `age_recipient: age1...` to your operator entry",
        )
    ]


# --------------------------------------------------------------------------- auth

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _oauth_entries(fleet: SourcedFleetConfig) -> Iterable[tuple[HubEntry, OAuthBase]]:
    for entry in fleet.hub_entries:
        if isinstance(entry.hub.auth, OAuthBase):
            yield entry, entry.hub.auth


def oauth_client_secret_set(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """An OAuth hub needs its client secret (as `{secret: KEY}`; plain text is refused by the model)."""
    return [
        _error(
            fleet,
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
                _error(
                    fleet,
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
                _error(fleet, entry, f"auth.allowed_users.{i}", f"auth.allowed_users[{i}]: {message}")
            )
        for i, item in enumerate(auth.allowed_organizations):
            org, _, team = item.partition(":")
            if team and org.lower() in whole_orgs:
                errors.append(
                    _error(
                        fleet,
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
                _error(
                    fleet,
                    entry,
                    "auth.issuer",
                    f"auth.issuer: prod hub '{entry.hub.name}' must reach its identity provider over "
                    f"https, not '{auth.issuer}' (http only for 127.0.0.1, localhost or ::1)",
                )
            )
    return errors


def cilogon_has_idps(fleet: SourcedFleetConfig) -> list[ConfigError]:
    return [
        _error(
            fleet,
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
            _error(
                fleet,
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
                hint = _did_you_mean(community, fleet.communities, "communities")
                errors.append(
                    _fleet_error(
                        fleet,
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
        _fleet_error(
            fleet,
            "console.oidc.issuer",
            f"console.oidc.issuer: the console must reach its identity provider over https, not "
            f"'{fleet.settings.console.oidc.issuer}' (http only for 127.0.0.1, localhost or ::1)",
        )
    ]


RULES: list[Rule] = [
    unique_hub_names,
    unique_ports,
    unique_domains,
    references_resolve,
    port_or_domain_by_cluster_kind,
    prod_has_staging,
    has_auth,
    admins_not_empty,
    no_dummy_auth_on_prod,
    oauth_client_secret_set,
    allow_all_without_allow_lists,
    github_allow_lists_consistent,
    oidc_issuer_https_on_prod,
    cilogon_has_idps,
    someone_can_log_in,
    secrets_files_match_hubs,
    secret_refs_are_set,
    fleet_secret_refs_are_set,
    secrets_have_recipients,
    kubernetes_settings_on_kubernetes_hubs,
    profiles_consistent,
    console_accounts_know_their_communities,
    console_oidc_issuer_https,
]


def check_rules(fleet: SourcedFleetConfig) -> list[ConfigError]:
    errors: list[ConfigError] = []
    for rule in RULES:
        errors.extend(rule(fleet))
    return errors

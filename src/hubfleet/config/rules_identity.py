"""Warnings (not errors) about hub username rules that can give two people one username.

A hub whose usernames drop what tells people apart merges them: the hub treats them as one account (one home,
one server) and, unless their provider asserts more at sign-in, usage and invoices count them as one person.
`hubfleet validate` prints these after the summary; the fleet stays valid.
"""

from __future__ import annotations

from hubfleet.config.fleet import ConfigError
from hubfleet.config.loader import SourcedFleetConfig
from hubfleet.config.models_auth import CILogonAuth, CILogonIdP, OIDCAuth

UNIQUE_CLAIMS = frozenset({"eppn", "email", "eptid", "oidc", "sub"})
"""CILogon claims unique across IdPs (scoped by domain, or CILogon's own identifiers)."""
NOT_UNIQUE_OIDC_CLAIMS = frozenset({"preferred_username", "name", "given_name", "family_name", "nickname"})
"""OpenID Connect Core 1.0 §5.7: only `sub` (with the issuer) identifies a person; these may be shared."""


def _bare(idp: CILogonIdP) -> bool:
    """Usernames of this IdP carry no domain or prefix that sets them apart from another IdP's."""
    if idp.username_prefix:
        return False
    return bool(idp.strip_domain) or idp.username_claim not in UNIQUE_CLAIMS


def username_merge_warnings(fleet: SourcedFleetConfig) -> list[ConfigError]:
    """CILogon hubs where two IdPs give bare usernames (e.g. both strip their domain: alice@uni-a.edu and
    alice@uni-b.edu both become `alice`), and OIDC hubs whose username claim is not unique at the provider."""
    warnings = []
    for entry in fleet.hub_entries:
        auth = entry.hub.auth
        if isinstance(auth, CILogonAuth):
            bare = [entity for entity, idp in auth.allowed_idps.items() if _bare(idp)]
            if len(bare) > 1:
                warnings.append(
                    fleet.hub_error(
                        entry,
                        "auth.allowed_idps",
                        f"warning: hub '{entry.hub.name}': IdPs {', '.join(bare)} all give usernames without "
                        "a domain (strip_domain, or a claim that is not unique), so two people of different "
                        "IdPs with the same name get one account; keep the domain on all but one IdP, or set "
                        "`username_prefix` on the others (hubfleet counts people by the claim's full value "
                        "for usage and invoices, but the hub cannot tell them apart)",
                    )
                )
        elif isinstance(auth, OIDCAuth) and auth.username_claim in NOT_UNIQUE_OIDC_CLAIMS:
            warnings.append(
                fleet.hub_error(
                    entry,
                    "auth.username_claim",
                    f"warning: hub '{entry.hub.name}': username_claim {auth.username_claim} is not unique at "
                    "the provider (OpenID Connect Core §5.7: only `sub` is), so two people can get one "
                    "account; prefer `email` or `sub` (hubfleet counts people by `sub` for usage and "
                    "invoices either way)",
                )
            )
    return warnings

"""People behind hub usernames: the identities OAuth hubs recorded at sign-in, read by the collector.

A hub username can drop what tells people apart (CILogon's `strip_domain` turns alice@uni-a.edu and, on a
second IdP, alice@uni-b.edu into `alice`), and one person has accounts on several hubs. The identity the
provider asserts does not: `<auth type>:<asserted id>` where the asserted id is

- cilogon: the value of the claim the IdP's usernames are derived from, before any domain is stripped (eppn,
  email, eptid and CILogon's own `oidc`/`sub` are unique by themselves; any other claim is prefixed with the
  IdP's entity ID and `#`);
- oidc: `<issuer>#<sub>` (`sub` is unique per issuer);
- github: the account's numeric id (logins can be renamed and reused; ids cannot).

Hubs without a provider (dummy, native, tmp) keep `<auth type>:<username>`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from hubfleet.render.identity_hook import IDENTITIES_PATH
from hubfleet.store.identities import HubUserIdentity
from hubfleet.store.models import UserDay

SCOPED_CLAIMS = frozenset({"eppn", "email", "eptid", "oidc", "sub"})
"""CILogon claims unique across IdPs by themselves."""


def person_identity(auth_type: str, provider: str, claim: str, subject: str) -> str:
    """`<auth type>:<asserted id>` of one sign-in (see the module docstring)."""
    if auth_type == "github":
        return f"github:{subject}"
    if auth_type == "cilogon" and claim in SCOPED_CLAIMS:
        return f"cilogon:{subject}"
    return f"{auth_type}:{provider}#{subject}" if provider else f"{auth_type}:{subject}"


@dataclass(frozen=True)
class SignIn:
    """One person seen signing in as `username`, from the hub's record."""

    username: str
    identity: str
    provider: str
    claim: str
    first: datetime
    last: datetime


def sign_ins(auth_type: str, items: Iterable[dict[str, Any]]) -> list[SignIn]:
    """The hub's rows (GET /hub/api/hubfleet/identities) as SignIns; malformed rows are skipped."""
    found = []
    for item in items:
        try:
            username, subject = str(item["username"]), str(item["subject"])
            provider, claim = str(item.get("provider") or ""), str(item.get("claim") or "")
            first = datetime.fromtimestamp(float(item["first_signin"]), UTC)
            last = datetime.fromtimestamp(float(item["last_signin"]), UTC)
        except (KeyError, TypeError, ValueError):
            continue
        if username and subject:
            identity = person_identity(auth_type, provider, claim, subject)
            found.append(SignIn(username, identity, provider, claim, first, last))
    return found


async def fetch_identities(
    client: httpx.AsyncClient, url: str, token: str, since: datetime | None
) -> list[dict[str, Any]] | None:
    """The hub's sign-ins at or after `since`; None when the hub has no such endpoint (not an OAuth hub,
    or not redeployed since hubfleet learned to record them)."""
    params = {"since": f"{since.timestamp():.3f}"} if since is not None else {}
    response = await client.get(
        f"{url}{IDENTITIES_PATH}", params=params, headers={"Authorization": f"token {token}"}
    )
    if response.status_code == 404:
        return None
    response.raise_for_status()
    items = response.json().get("items")
    return items if isinstance(items, list) else []


def newest_signin(session: Session, hub: str) -> datetime | None:
    """Where the next fetch of `hub`'s sign-ins starts."""
    from sqlalchemy import func

    return session.scalar(select(func.max(HubUserIdentity.last_signin)).where(HubUserIdentity.hub == hub))


def record_sign_ins(session: Session, hub: str, found: Sequence[SignIn]) -> int:
    """Store sign-ins (inside the caller's transaction) and give the user days of each username from its
    sign-in on to the person who signed in (a username reused by another person later is theirs from then).
    Returns how many were new or newer. Bulk statements: thousands of sign-ins cost milliseconds."""
    if not found:
        return 0
    names = sorted({s.username for s in found})
    existing: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for chunk in _chunks(names):
        query = select(
            HubUserIdentity.username,
            HubUserIdentity.identity,
            HubUserIdentity.first_signin,
            HubUserIdentity.last_signin,
        ).where(HubUserIdentity.hub == hub, HubUserIdentity.username.in_(chunk))
        for username, who, first, last in session.execute(query):
            existing[(username, who)] = (first, last)
    fresh: dict[tuple[str, str], dict[str, Any]] = {}
    newer: dict[tuple[str, str], dict[str, Any]] = {}
    latest: dict[str, list[SignIn]] = {}
    for sign_in in sorted(found, key=lambda s: s.last):
        key = (sign_in.username, sign_in.identity)
        if key in existing:
            first, last = existing[key]
            if sign_in.last <= last:
                continue
            newer[key] = {
                "hub": hub,
                "username": key[0],
                "identity": key[1],
                "first_signin": min(first, sign_in.first),
                "last_signin": sign_in.last,
            }
            existing[key] = (min(first, sign_in.first), sign_in.last)
        elif key in fresh:
            fresh[key]["last_signin"] = max(fresh[key]["last_signin"], sign_in.last)
        else:
            fresh[key] = {
                "hub": hub,
                "username": key[0],
                "identity": key[1],
                "provider": sign_in.provider,
                "claim": sign_in.claim,
                "first_signin": sign_in.first,
                "last_signin": sign_in.last,
            }
        latest.setdefault(sign_in.username, []).append(sign_in)
    if fresh:
        session.execute(insert(HubUserIdentity), list(fresh.values()))
    if newer:
        session.execute(update(HubUserIdentity), list(newer.values()))
    _relabel_days(session, hub, latest)
    return len(fresh) + len(newer)


def _chunks(names: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for start in range(0, len(names), size):
        yield names[start : start + size]


def _relabel_days(session: Session, hub: str, sign_ins_by_user: dict[str, list[SignIn]]) -> None:
    """User days on or after a sign-in's day belong to whoever signed in last before them."""
    if not sign_ins_by_user:
        return
    earliest = min(s.last.date() for found in sign_ins_by_user.values() for s in found)
    changes = []
    for chunk in _chunks(sorted(sign_ins_by_user)):
        query = select(UserDay.username, UserDay.day, UserDay.identity).where(
            UserDay.hub == hub, UserDay.username.in_(chunk), UserDay.day >= earliest
        )
        for username, day, current in session.execute(query):
            owner = None
            for sign_in in sign_ins_by_user[username]:  # oldest first
                if sign_in.last.date() <= day:
                    owner = sign_in.identity
            if owner is not None and owner != current:
                changes.append({"hub": hub, "username": username, "day": day, "identity": owner})
    if changes:
        session.execute(update(UserDay), changes)


def known_identities(session: Session, hub: str, usernames: Iterable[str]) -> dict[str, str]:
    """Each username's identity of its latest sign-in on `hub` (absent: none recorded)."""
    names = sorted(set(usernames))
    latest: dict[str, tuple[datetime, str]] = {}
    for start in range(0, len(names), 500):
        query = select(HubUserIdentity.username, HubUserIdentity.identity, HubUserIdentity.last_signin).where(
            HubUserIdentity.hub == hub, HubUserIdentity.username.in_(names[start : start + 500])
        )
        for username, identity, last in session.execute(query):
            if username not in latest or last > latest[username][0]:
                latest[username] = (last, identity)
    return {username: identity for username, (_, identity) in latest.items()}

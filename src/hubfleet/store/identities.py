"""Who signed in behind a hub username, as the sign-in provider asserted it (migration 0015).

Written by the usage collector from what each OAuth hub recorded at sign-in (hubfleet.render.identity_hub):
the provider (CILogon IdP, OIDC issuer, github.com), the claim and its value, never a token. Read by the
usage queries: UserDay.identity is `<auth type>:<asserted id>` when one is known, so MAU counts people.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from hubfleet.store.models import Base, HubUserGroup


class HubUserIdentity(Base):
    """One person (identity) seen signing in as `username` on `hub`, from the first to the latest sign-in.
    A username that two people used has two rows."""

    __tablename__ = "hub_user_identities"

    hub: Mapped[str] = mapped_column(String(200), primary_key=True)
    username: Mapped[str] = mapped_column(String(255), primary_key=True)
    identity: Mapped[str] = mapped_column(String(400), primary_key=True, index=True)
    """`<auth type>:<asserted id>` (hubfleet.monitor.identities.person_identity)."""
    provider: Mapped[str] = mapped_column(String(400), default="")
    """The CILogon IdP entity ID, the OIDC issuer, or github.com."""
    claim: Mapped[str] = mapped_column(String(100), default="")
    """Which claim was asserted: eppn, email, sub, id, ..."""
    first_signin: Mapped[datetime]
    last_signin: Mapped[datetime]


def group_memberships(
    session: Session, start: datetime, end: datetime, hubs: Sequence[str] | None = None
) -> dict[tuple[str, str], list[str]]:
    """(hub, username) -> groups the user was in at some time in [start, end): memberships are end-dated by
    the collector (a membership that ended keeps the last_seen of the last collection that saw it)."""
    query = select(HubUserGroup.hub, HubUserGroup.username, HubUserGroup.group).where(
        HubUserGroup.first_seen < end, HubUserGroup.last_seen >= start
    )
    if hubs is not None:
        query = query.where(HubUserGroup.hub.in_(list(hubs)))
    found: dict[tuple[str, str], list[str]] = {}
    for hub, username, group in session.execute(query.order_by(HubUserGroup.group)):
        found.setdefault((hub, username), []).append(group)
    return found

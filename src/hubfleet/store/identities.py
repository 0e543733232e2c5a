"""Who signed in behind a hub username, as the sign-in provider asserted it (migration 0015).

Written by the usage collector from what each OAuth hub recorded at sign-in (hubfleet.render.identity_hub):
the provider (CILogon IdP, OIDC issuer, github.com), the claim and its value, never a token. Read by the
usage queries: UserDay.identity is `<auth type>:<asserted id>` when one is known, so MAU counts people.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from hubfleet.store.models import Base


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

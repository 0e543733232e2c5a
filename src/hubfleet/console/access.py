"""Who is asking, and what they may see: operators see the whole fleet, community leaders their
communities only. Anything outside a caller's communities is reported as missing (404), never as
forbidden, so its name is not confirmed either."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import ConsoleAccount, Hub

OPERATOR = "operator"
COMMUNITY_LEADER = "community-leader"


@dataclass(frozen=True)
class Principal:
    username: str
    role: str
    communities: frozenset[str]
    display_name: str
    via: str  # "session" | "token"
    csrf_token: str | None = None
    """The session's CSRF token (None for API tokens, which browsers do not send by themselves)."""

    @property
    def is_operator(self) -> bool:
        return self.role == OPERATOR

    def sees_community(self, community: str) -> bool:
        return self.is_operator or community in self.communities

    def sees_hub(self, hub: Hub) -> bool:
        return self.sees_community(hub.community)

    def to_dict(self) -> dict[str, object]:
        return {
            "username": self.username,
            "role": self.role,
            "communities": sorted(self.communities),
            "display_name": self.display_name,
            "via": self.via,
        }


def find_account(fleet: FleetConfig, username: str) -> ConsoleAccount | None:
    return next((a for a in fleet.settings.console.accounts if a.username == username), None)


def principal_for(
    fleet: FleetConfig, username: str, via: str, csrf_token: str | None = None
) -> Principal | None:
    """The principal of `username` as fleet.yaml describes it now (None once the account is removed)."""
    account = find_account(fleet, username)
    if account is None:
        return None
    return Principal(
        username=account.username,
        role=account.role,
        communities=frozenset(account.communities),
        display_name=account.display_name or account.username,
        via=via,
        csrf_token=csrf_token,
    )


def visible_hubs(fleet: FleetConfig, principal: Principal) -> list[Hub]:
    """The hubs `principal` may see, by community then name."""
    hubs = [hub for hub in fleet.hubs.values() if principal.sees_hub(hub)]
    return sorted(hubs, key=lambda h: (h.community, h.name))


def visible_communities(fleet: FleetConfig, principal: Principal) -> list[str]:
    return sorted(name for name in fleet.communities if principal.sees_community(name))


def hub_or_404(fleet: FleetConfig, principal: Principal, name: str) -> Hub:
    hub = fleet.hubs.get(name)
    if hub is None or not principal.sees_hub(hub):
        raise HTTPException(status_code=404, detail=f"no hub named '{name}'")
    return hub


def community_or_404(fleet: FleetConfig, principal: Principal, name: str) -> str:
    if name not in fleet.communities or not principal.sees_community(name):
        raise HTTPException(status_code=404, detail=f"no community named '{name}'")
    return name


def require_operator(principal: Principal) -> None:
    if not principal.is_operator:
        raise HTTPException(status_code=403, detail="only operators may do this")

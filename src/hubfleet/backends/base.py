"""The interface every backend implements; a new backend is one new module on this base."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from hubfleet.checks.synthetic import Via
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub


@dataclass(frozen=True)
class HubEndpoint:
    """How the control plane reaches a hub: its public URL and the control-plane service token."""

    name: str
    url: str
    token: str
    via: Via | None = None
    """Set when `url` is the hub's public name reached at the fleet's front door (the synthetic check)."""

    def __repr__(self) -> str:  # never print the token
        return f"HubEndpoint(name={self.name!r}, url={self.url!r}, token='***')"


@dataclass
class ApplyResult:
    """The outcome of applying, rolling back or removing one hub: `message` says what failed and
    `log_tail` shows the last lines of the hub's (or helm's) output. Never holds secret values."""

    ok: bool
    message: str = ""
    log_tail: list[str] = field(default_factory=list)


class Backend(ABC):
    """Renders and runs the hubs of one cluster kind."""

    kind: ClassVar[str]

    def __init__(self, fleet: FleetConfig, state_dir: Path):
        self.fleet = fleet
        self.state_dir = state_dir

    @abstractmethod
    def render(self, hub: Hub) -> str:
        """What would be applied for this hub, with no secret values in it."""

    @abstractmethod
    def config_hash(self, hub: Hub) -> str:
        """Desired-state hash of everything that affects this hub."""

    def render_and_hash(self, hub: Hub) -> tuple[str, str]:
        """`render` and `config_hash` together; a backend whose hash is built from its rendering overrides
        it to render once (a plan of 5,000 hubs renders each hub once, not twice)."""
        return self.render(hub), self.config_hash(hub)

    @abstractmethod
    def endpoint(self, hub_name: str) -> HubEndpoint:
        """URL and control-plane token of a deployed hub."""

    def check_endpoint(self, hub_name: str) -> HubEndpoint:
        """Where the synthetic check reaches the hub: where its users do (default: `endpoint`)."""
        return self.endpoint(hub_name)

    @abstractmethod
    async def apply(self, hub: Hub) -> ApplyResult:
        """Make the hub run its desired configuration (create or update); wait until it is up."""

    @abstractmethod
    async def rollback(self, hub: Hub) -> ApplyResult:
        """Return the hub to the configuration it ran before the last `apply`."""

    @abstractmethod
    async def remove(self, hub_name: str, *, purge: bool = False) -> ApplyResult:
        """Stop the hub; keep its data unless `purge`."""

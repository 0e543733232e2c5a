"""The loaded fleet, `FleetConfig`: what every other part of hubfleet consumes; and the errors that loading
reports (`ConfigError`, one `file:line:col: message` each, and `FleetInvalid` carrying all of them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hubfleet.config.models import Cluster, Community, FleetSettings, Hub
from hubfleet.config.models_backup import BackupPolicy, backup_policy
from hubfleet.config.models_events import Event
from hubfleet.settings import UserError
from hubfleet.suggest import suggestion


@dataclass(frozen=True, order=True)
class ConfigError:
    """One problem in the fleet files, printed as `file:line:col: message` (file relative to the fleet)."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class FleetInvalid(Exception):
    """The fleet files have errors; `errors` lists every one of them."""

    def __init__(self, errors: list[ConfigError]):
        self.errors = sorted(set(errors))
        super().__init__(f"{len(self.errors)} error(s) in the fleet configuration")


@dataclass
class FleetConfig:
    root: Path
    settings: FleetSettings
    """fleet.yaml: the fleet-wide settings (name, operators, defaults, monitoring, console)."""
    clusters: dict[str, Cluster] = field(default_factory=dict)
    communities: dict[str, Community] = field(default_factory=dict)
    hubs: dict[str, Hub] = field(default_factory=dict)
    """Effective hub settings: the hub file merged over fleet.yaml `defaults`."""
    hub_files: dict[str, Path] = field(default_factory=dict)
    """Hub name -> the file it was loaded from, relative to root."""
    cluster_files: dict[str, str] = field(default_factory=dict)
    """Cluster name -> the file it was loaded from, relative to root (any name: not always <name>.yaml)."""
    community_files: dict[str, str] = field(default_factory=dict)
    """Community name -> its community.yaml (or .yml), relative to root."""
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    """Hub name -> secret key -> ASCII-armored age ciphertext, from communities/<c>/secrets/<hub>.yaml
    (never a plaintext value; decrypt with hubfleet.secrets.store.SecretResolver)."""
    fleet_secrets: dict[str, str] = field(default_factory=dict)
    """Fleet-level secrets (alert channels' webhook URLs, SMTP passwords), from secrets/fleet.yaml:
    key -> ASCII-armored age ciphertext, like the hub secrets files."""

    def file(self, value: str) -> Path:
        """A path a fleet file names: absolute as it is, else relative to the fleet directory."""
        return Path(value) if Path(value).is_absolute() else self.root / value

    def require_hub(self, name: str) -> Hub:
        """The hub called `name`; a UserError naming the closest hub (or every hub) when there is none."""
        hub = self.hubs.get(name)
        if hub is None:
            hint = suggestion(name, sorted(self.hubs), "hubs", "hubs: none")
            raise UserError(f"no hub named '{name}' in fleet '{self.settings.name}'; {hint}")
        return hub

    def events_of(self, hub_name: str) -> list[Event]:
        """The hub's events: its file's and its community's that name it, by start time."""
        hub = self.hubs.get(hub_name)
        if hub is None:
            return []
        community = self.communities.get(hub.community)
        found = [e if e.hub else e.model_copy(update={"hub": hub_name}) for e in hub.events]
        found += [e for e in (community.events if community else []) if e.hub == hub_name]
        return sorted(found, key=lambda e: (e.start, e.name))

    def events(self) -> list[Event]:
        """Every event of the fleet, by start time."""
        found = [event for name in self.hubs for event in self.events_of(name)]
        return sorted(found, key=lambda e: (e.start, e.hub or "", e.name))

    def cluster_of(self, hub: Hub) -> Cluster:
        return self.clusters[hub.cluster]

    def local_hubs(self) -> list[Hub]:
        return [h for h in self.hubs.values() if self.clusters[h.cluster].kind == "local"]

    def front_door_site(self, hub: Hub) -> tuple[str, str] | None:
        """(host, path prefix) at which the front door serves a local hub: its own `domain` with no prefix,
        else `/<hub name>` under the front door's domain; None without a front door and on kubernetes."""
        door = self.settings.front_door
        if door is None or self.clusters[hub.cluster].kind != "local":
            return None
        if hub.domain:
            return hub.domain, ""
        return (door.domain, f"/{hub.name}") if door.domain else None

    def base_path(self, hub: Hub) -> str:
        """The hub's JupyterHub base_url without its trailing slash: `/<hub name>` when it is served at a path
        under the front door's domain, else empty."""
        site = self.front_door_site(hub)
        return site[1] if site else ""

    def internal_url(self, hub: Hub) -> str | None:
        """Where the control plane reaches a local hub: http://127.0.0.1:PORT (plus its base path)."""
        return f"http://127.0.0.1:{hub.port}{self.base_path(hub)}" if hub.port else None

    def front_door_origin(self, host: str) -> str:
        """https://HOST, with the front door's https_port when it is not 443."""
        door = self.settings.front_door
        port = door.https_port if door is not None else 443
        return f"https://{host}" if port == 443 else f"https://{host}:{port}"

    def public_url(self, hub: Hub) -> str | None:
        """The address users open (no trailing slash): through the front door when the fleet has one
        (https://DOMAIN or https://FLEET-DOMAIN/HUB), else http://127.0.0.1:PORT for a hub on a local cluster;
        https://DOMAIN on kubernetes; None while the hub file names neither."""
        if self.clusters[hub.cluster].kind == "local":
            site = self.front_door_site(hub)
            return self.front_door_origin(site[0]) + site[1] if site else self.internal_url(hub)
        return f"https://{hub.domain}" if hub.domain else None

    def backup_policy(self, hub: Hub) -> BackupPolicy | None:
        """The hub's backup schedule and retention; None when it is not backed up."""
        return backup_policy(self.settings.backups, hub.backup)

    def console_url(self) -> str | None:
        """The console's public address: the front door's console_domain, else `console.public_url`."""
        door = self.settings.front_door
        if door is not None and door.console_domain:
            return self.front_door_origin(door.console_domain)
        return self.settings.console.public_url

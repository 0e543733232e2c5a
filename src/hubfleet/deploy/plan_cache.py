"""Which hubs a plan need not render again: each hub's config hash in the fleet cache (config/cache.py), keyed
by the sha256 of everything its rendering and hash read.

That is, for every hub: the code fingerprint (hubfleet, JupyterHub, Python); the fleet directory and state
directory it renders paths from; the bytes of fleet.yaml (fleet-wide settings, defaults, operators) and
the fleet-level secrets' ciphertext (such as the service token key); the bytes of the hub's own file, its
cluster's file and its community's file, and its secrets' ciphertext (a changed secret is changed
ciphertext); the logo file its branding names; on a local cluster its runtime.json (internal ports) and
the state directory's layout.json, the isolation mode and the account; the HUBFLEET_* environment; and which
event's ready mode the schedule says it is in now. A renderer that starts reading another input must add it
here (tests/test_config_cache.py compares cached with uncached plans).

Only the hash is kept. A hub whose cached hash equals the deployed one is unchanged, and its rendered text is
the deployed record's; any other hub is rendered as before.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from hubfleet.clock import utcnow
from hubfleet.config.cache import FleetCache, code_fingerprint
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.deploy.state import source_files
from hubfleet.render.ready_mode import ready_event

ABSENT = "-"


class PlanCache:
    """The hub half of the fleet cache for one plan: `lookup` a hub's hash, `remember` a rendered one."""

    def __init__(self, cache: FleetCache, fleet: FleetConfig, state_dir: Path):
        self.cache = cache
        self.fleet = fleet
        self.state_dir = Path(state_dir)
        self._fleet_wide: str | None = None
        self._now = utcnow()
        self._hubs_dir = os.fspath(self.state_dir / "hubs")

    def key(self, hub: Hub, kind: str) -> str:
        digest = hashlib.sha256(self.fleet_wide().encode())
        digest.update(f"\nhub {hub.name} {kind}\n".encode())
        for name in source_files(self.fleet, hub):
            if "/secrets/" not in name:  # its values are hashed below, as the resolver reads them
                digest.update(f"{name} {self._file_digest(name)}\n".encode())
        digest.update(f"secrets {_values_digest(self.fleet.secrets.get(hub.name, {}))}\n".encode())
        logo = hub.branding.logo
        if logo is not None:
            where = self.fleet.root / "communities" / hub.community / logo
            digest.update(f"logo {logo} {_digest(where)}\n".encode())
        if kind == "local":
            runtime = _digest(f"{self._hubs_dir}/{hub.name}/runtime.json")  # a str: Paths cost here
            digest.update(f"runtime {runtime}\n".encode())
        events = self.fleet.events_of(hub.name) if hub.events or self._has_events(hub) else []
        event = ready_event(events, self._now)
        if event is not None:
            digest.update(f"ready {event.name} {event.start.isoformat()} {event.end.isoformat()}\n".encode())
        return digest.hexdigest()

    def lookup(self, hub: Hub, kind: str) -> tuple[str, str | None]:
        """(the hub's key, its cached config hash or None)."""
        key = self.key(hub, kind)
        return key, self.cache.hub_hash(hub.name, key)

    def remember(self, key: str, config_hash: str) -> None:
        self.cache.remember_hub_hash(key, config_hash)

    def fleet_wide(self) -> str:
        """What every hub's key holds (computed once a plan)."""
        if self._fleet_wide is None:
            from hubfleet.backends.local import isolation_mode

            root = Path(self.fleet.root).resolve()
            environment = sorted((k, v) for k, v in os.environ.items() if k.startswith("HUBFLEET_"))
            parts = [
                code_fingerprint(),
                f"fleet {root}",
                f"state {self.state_dir.resolve()}",
                f"fleet.yaml {self._file_digest('fleet.yaml')}",
                f"fleet secrets {_values_digest(self.fleet.fleet_secrets)}",
                f"layout {_digest(self.state_dir / 'layout.json')}",
                f"isolation {isolation_mode()} uid {os.geteuid()}",
                "env " + hashlib.sha256(repr(environment).encode()).hexdigest(),
            ]
            self._fleet_wide = "\n".join(parts)
        return self._fleet_wide

    def _file_digest(self, name: str) -> str:
        """sha256 of a fleet file's bytes: the one the loader read through the cache, else read now."""
        found = self.cache.digests.get(name)
        if found is None:
            found = self.cache.digests[name] = _digest(self.fleet.root / name)
        return found

    def _has_events(self, hub: Hub) -> bool:
        community = self.fleet.communities.get(hub.community)
        return bool(community is not None and community.events)


def _values_digest(values: dict[str, str]) -> str:
    """sha256 of secrets as stored (KEY -> age ciphertext): a changed secret is changed ciphertext."""
    return hashlib.sha256(repr(sorted(values.items())).encode()).hexdigest()


def _digest(path: Path | str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return ABSENT

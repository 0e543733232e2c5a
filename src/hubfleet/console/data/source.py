"""What the console reads: the store, the fleet configuration (reloaded) and the daemon's view of its hubs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hubfleet.config.fleet import FleetConfig
from hubfleet.runtime.processes import pid_alive
from hubfleet.runtime.status_file import read_status, status_path
from hubfleet.store.api import Store


class ConsoleSource:
    """What the console reads: the store, the fleet config and the daemon's view of local hubs."""

    def __init__(
        self, store: Store, fleet: FleetConfig | Callable[[], FleetConfig], state_dir: Path | None
    ) -> None:
        self.store = store
        self._fleet = fleet
        self.state_dir = state_dir
        self._status: tuple[int, dict[str, Any]] | None = None

    @property
    def fleet(self) -> FleetConfig:
        """The current configuration (asked again on every access when a callable was given: reloads)."""
        return self._fleet if isinstance(self._fleet, FleetConfig) else self._fleet()

    def hub_states(self) -> dict[str, dict[str, Any]]:
        """daemon.json's hubs, re-read only when the file changed; {} without a running daemon."""
        if self.state_dir is None:
            return {}
        try:
            mtime = status_path(self.state_dir).stat().st_mtime_ns
        except OSError:
            return {}
        if self._status is None or self._status[0] != mtime:
            status = read_status(self.state_dir)
            if status is None:  # no daemon, or a file caught mid-write: not cached
                return {}
            self._status = (mtime, status)
        status = self._status[1]
        # the daemon may have died without rewriting its file: its pid says so
        return dict(status.get("hubs") or {}) if pid_alive(status.get("pid")) else {}

"""The fleet config as it is on disk now: the console re-reads it when a file changed, so an account added
to fleet.yaml can sign in (and a removed one is locked out) without restarting anything."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from hubfleet.config.fleet import FleetConfig, FleetInvalid
from hubfleet.config.validate import load_fleet

log = logging.getLogger(__name__)


FLEET_DIRS = ("clusters", "communities", "secrets")
"""Where the fleet's files live besides fleet.yaml (the state directory, with hub homes, is never walked)."""


def _fingerprint(root: Path) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime, size) of fleet.yaml and every YAML file of the fleet's directories."""
    paths = [str(root / "fleet.yaml")]
    for top in FLEET_DIRS:
        for directory, _, files in os.walk(root / top):
            paths += [os.path.join(directory, name) for name in files if name.endswith((".yaml", ".yml"))]
    found = []
    for path in paths:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            continue
        found.append((path, stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(found))


class FleetReloader:
    """Call it for the current FleetConfig; files are looked at no more than every `interval` seconds.
    A fleet that no longer validates is logged and the last good one kept."""

    def __init__(self, fleet: FleetConfig, interval: float = 2.0):
        self._fleet = fleet
        self._interval = interval
        self._checked = time.monotonic()
        self._fingerprint = _fingerprint(fleet.root)

    def __call__(self) -> FleetConfig:
        now = time.monotonic()
        if now - self._checked < self._interval:
            return self._fleet
        self._checked = now
        current = _fingerprint(self._fleet.root)
        if current != self._fingerprint:
            self._fingerprint = current
            try:
                self._fleet = load_fleet(self._fleet.root)
                log.info("console: fleet configuration reloaded from %s", self._fleet.root)
            except FleetInvalid as exc:
                log.warning(
                    "console: the fleet configuration has %d error(s) (hubfleet validate); "
                    "showing the last valid one",
                    len(exc.errors),
                )
        return self._fleet

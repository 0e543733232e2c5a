"""The entry points for the rest of hubfleet: load a fleet directory and run every cross-file rule.

They sit above both the loader and the rules (the rules work on what the loader returns), so the loader never
has to import the rules and the two modules have no import cycle.
"""

from __future__ import annotations

from pathlib import Path

from hubfleet.config.cache import FleetCache, gc_paused
from hubfleet.config.fleet import ConfigError, FleetConfig, FleetInvalid
from hubfleet.config.loader import SourcedFleetConfig, load_fleet_files
from hubfleet.config.rules import check_rules


def validate_fleet(
    root: Path | str, cache: FleetCache | None = None
) -> tuple[SourcedFleetConfig | None, list[ConfigError]]:
    """Load the fleet and run every rule: (the fleet, []) when valid, else (None, every error, sorted).

    With a `cache` (config/cache.py) files parsed before are not parsed again; every file is still validated
    and every cross-file rule still runs over the whole fleet, so an error is never hidden by the cache."""
    with gc_paused():
        config, errors = load_fleet_files(Path(root), cache)
        if config is not None:
            errors.extend(check_rules(config))
    errors = sorted(set(errors))
    if cache is not None:
        cache.save()
    return (config if not errors else None), errors


def load_fleet(root: Path, cache: FleetCache | None = None) -> FleetConfig:
    """Load and validate the fleet in `root`; raise FleetInvalid listing every error."""
    config, errors = validate_fleet(root, cache)
    if errors or config is None:
        raise FleetInvalid(errors)
    return config

"""The entry points for the rest of hubfleet: load a fleet directory and run every cross-file rule.

They sit above both the loader and the rules (the rules work on what the loader returns), so the loader never
has to import the rules and the two modules have no import cycle.
"""

from __future__ import annotations

from pathlib import Path

from hubfleet.config.fleet import ConfigError, FleetConfig, FleetInvalid
from hubfleet.config.loader import SourcedFleetConfig, load_fleet_files
from hubfleet.config.rules import check_rules


def validate_fleet(root: Path | str) -> tuple[SourcedFleetConfig | None, list[ConfigError]]:
    """Load the fleet and run every rule: (the fleet, []) when valid, else (None, every error, sorted)."""
    config, errors = load_fleet_files(Path(root))
    if config is not None:
        errors.extend(check_rules(config))
    errors = sorted(set(errors))
    return (config if not errors else None), errors


def load_fleet(root: Path) -> FleetConfig:
    """Load and validate the fleet in `root`; raise FleetInvalid listing every error."""
    config, errors = validate_fleet(root)
    if errors or config is None:
        raise FleetInvalid(errors)
    return config

"""Where the fleet and its state live: CLI flags, then HUBFLEET_* environment variables, then defaults."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class UserError(Exception):
    """A mistake the user can fix; printed as one line without a traceback (unless --debug)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUBFLEET_", env_ignore_empty=True)

    fleet: Path | None = None
    state_dir: Path | None = None
    data_dir: Path | None = None
    """Hub databases and users' homes; read once, when a state directory is first used (runtime/layout.py)."""
    actor: str | None = None
    """Who runs deploys, for the audit trail (else git's user.name and user.email of the fleet repository)."""
    isolation: Literal["auto", "single"] = "auto"
    """auto: an OS account per hub and per hub user when root, one account otherwise; single: one account even
    as root (a machine whose isolation comes from elsewhere)."""
    hub_start: Literal["fork", "process"] = "fork"
    """fork: with service accounts, hubs are forks of one process that imported JupyterHub once
    (daemon/hub_templates.py); process: each hub is a fresh `jupyterhub` process (to compare, or to rule the
    template out)."""

    def __init__(self, **values: Any) -> None:
        """A bad HUBFLEET_* variable is one line naming it and what it may be, not a traceback."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"HUBFLEET_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
                for error in exc.errors()
            )
            raise UserError(f"{problems}; fix or unset the variable") from None


def resolve_fleet_dir(flag: Path | None) -> Path:
    """--fleet, else $HUBFLEET_FLEET, else the current directory when it holds fleet.yaml."""
    candidate = flag or Settings().fleet
    if candidate is None:
        cwd = Path.cwd()
        if (cwd / "fleet.yaml").is_file():
            return cwd
        raise UserError(
            "no fleet given: pass --fleet DIR, set HUBFLEET_FLEET, or run in a directory holding fleet.yaml"
        )
    path = Path(candidate).expanduser()
    if not path.is_dir():
        raise UserError(
            f"{path}: fleet directory not found; pass --fleet DIR pointing at a directory with fleet.yaml"
        )
    return path.resolve()


def resolve_state_dir(fleet_dir: Path, flag: Path | None = None) -> Path:
    """--state-dir, else $HUBFLEET_STATE_DIR, else <fleet>/.hubfleet."""
    chosen = flag or Settings().state_dir or fleet_dir / ".hubfleet"
    return Path(chosen).expanduser().resolve()


def seconds_from_env(name: str, default: float, minimum: float = 0.0) -> float:
    """$NAME in seconds (tests shorten the daemon's intervals with it), at least `minimum`, else `default`;
    a value that is not a number is logged and ignored."""
    raw = os.environ.get(name, "").strip()
    if raw:
        try:
            return max(minimum, float(raw))
        except ValueError:
            logging.getLogger("hubfleet").warning("ignoring %s=%r: not a number of seconds", name, raw)
    return default

"""`<state>/daemon.json`: the running daemon's view of every hub, written by the daemon, read by `status`,
`deploy`, the console and `export-monitoring`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hubfleet.runtime.processes import pid_alive

STATUS_FILE = "daemon.json"


def status_path(state_dir: Path) -> Path:
    return state_dir / STATUS_FILE


def write_status(state_dir: Path, status: dict[str, Any]) -> None:
    """Replace the file atomically, so a reader never sees half of it."""
    path = status_path(state_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=2))
    os.replace(tmp, path)


def read_recorded_status(state_dir: Path) -> dict[str, Any] | None:
    """What the file says, whether or not its daemon still runs (None when there is no readable file)."""
    try:
        data = json.loads(status_path(state_dir).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_status(state_dir: Path) -> dict[str, Any] | None:
    """The running daemon's status, or None when no daemon is running for this state dir."""
    data = read_recorded_status(state_dir)
    return data if data is not None and pid_alive(data.get("pid")) else None


def remove_status(state_dir: Path) -> None:
    status_path(state_dir).unlink(missing_ok=True)

"""Who deploys and from which commit of the fleet repository, for the audit trail (`history`, the console)."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
from pathlib import Path

from hubfleet.settings import Settings


def _git(fleet_dir: Path, *args: str) -> str | None:
    if shutil.which("git") is None:
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(fleet_dir), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def deploy_actor(fleet_dir: Path, what: str = "hubfleet deploy") -> str:
    """`HUBFLEET_ACTOR`, else git's user.name <user.email> of the fleet repository, else login@host; then
    `via <what>` (e.g. "Ada Operator <ada@example.org> via hubfleet deploy")."""
    person = Settings().actor
    if not person:
        name, email = _git(fleet_dir, "config", "user.name"), _git(fleet_dir, "config", "user.email")
        person = " ".join(part for part in (name, f"<{email}>" if email else None) if part)
    if not person:
        try:
            login = getpass.getuser()
        except (KeyError, OSError):
            login = "unknown"
        person = f"{login}@{socket.gethostname()}"
    return f"{person} via {what}"


def fleet_commit(fleet_dir: Path) -> str | None:
    """The fleet repository's HEAD commit, with `-dirty` when its files have uncommitted changes; None when
    the fleet is not in a git repository."""
    head = _git(fleet_dir, "rev-parse", "HEAD")
    if head is None:
        return None
    dirty = _git(fleet_dir, "status", "--porcelain", "--untracked-files=no", "--", ".")
    return f"{head}-dirty" if dirty else head

"""Where a running fleet keeps its files, and who may read them.

Two trees, because they have different readers:

- the **state directory** (`<fleet>/.hubfleet` by default) is the control plane's alone: the store,
  daemon.json, the control socket, hub tokens, runtime facts and logs. Mode 0700, files 0600.
- the **data directory** (`<state>-data`, or `$HUBFLEET_DATA_DIR` when the state directory is first used)
  holds what hub and user accounts must reach by path: `hubs/<hub>/` (the hub's config, database and cookie
  secret, owned by the hub's service account, 0700), `homes/<hub>/<user>/` (owned by the user's account,
  0700). Its directories are 0711: anyone may pass through, nobody may list. The broker sockets are in
  /run/hubfleet/ (as root only; one per hub, owned by the hub's service account).

The data directory and a short fleet instance id (part of every account name, so two fleets on one machine
never share accounts) are recorded in `<state>/layout.json` the first time, so later commands agree on them.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hubfleet.settings import Settings

log = logging.getLogger("hubfleet.layout")

LAYOUT_FILE = "layout.json"
BROKER_DIR = Path("/run/hubfleet")


@dataclass(frozen=True)
class Layout:
    state_dir: Path
    data_dir: Path
    instance: str
    """Hex id of this fleet installation; part of every OS account name it creates."""

    def hub_state(self, hub: str) -> Path:
        """The control plane's files about a hub: tokens, runtime.json, hub.log (private)."""
        return self.state_dir / "hubs" / hub

    def hub_data(self, hub: str) -> Path:
        """The hub's own files: config, database, cookie secret, proxy pid (its service account's)."""
        return self.data_dir / "hubs" / hub

    def homes(self, hub: str) -> Path:
        return self.data_dir / "homes" / hub

    def broker_socket(self, hub: str) -> Path:
        """In /run, not the data directory: a unix socket's path must fit in 107 bytes."""
        return BROKER_DIR / f"{self.instance}-{hub}.sock"


def layout(state_dir: Path) -> Layout:
    """The fleet's layout, recorded on first use (nothing is created on disk but layout.json)."""
    path = state_dir / LAYOUT_FILE
    try:
        recorded = json.loads(path.read_text())
        return Layout(state_dir, Path(recorded["data_dir"]), str(recorded["instance"]))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OSError(
            f"{path}: unreadable ({exc}); restore it from a backup or delete it to start afresh"
        ) from exc
    chosen = Settings().data_dir or state_dir.with_name(state_dir.name + "-data")
    result = Layout(state_dir, Path(chosen).expanduser().resolve(), secrets.token_hex(3))
    make_private_dir(state_dir)
    write_private(path, json.dumps({"data_dir": str(result.data_dir), "instance": result.instance}, indent=2))
    return result


def make_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def make_state_private(state_dir: Path) -> None:
    """State directory 0700, everything in it owner-only: upgrades a tree an older hubfleet left readable."""
    make_private_dir(state_dir)
    for root, dirs, files in os.walk(state_dir):
        for name in dirs:
            _chmod_nofollow(Path(root) / name, 0o700)
        for name in files:
            _chmod_nofollow(Path(root) / name, 0o600)


def _chmod_nofollow(path: Path, mode: int) -> None:
    try:
        st = path.lstat()
        if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & ~mode:
            os.chmod(path, stat.S_IMODE(st.st_mode) & mode)
    except OSError:
        pass


def make_passable_dir(path: Path) -> None:
    """A directory others may pass through but not list (0711), owned by whoever runs hubfleet."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o711)


def migrate_hub(layout: Layout, hub: str, home_name: Callable[[str], str] = str) -> list[str]:
    """Move what an older hubfleet kept in the state tree (`hubs/<hub>/`: database, cookie secret, homes) to
    the data tree, in place and without overwriting anything; `home_name` maps the old home's name (the raw
    username) to the one servers use now. Returns what was moved, for the log.

    Runs before the state tree is made private: that would take the execute bits off users' files."""
    old = layout.hub_state(hub)
    moved: list[str] = []
    if not old.is_dir():
        return moved
    new = layout.hub_data(hub)
    for name in (
        "jupyterhub.sqlite",
        "jupyterhub.sqlite-wal",
        "jupyterhub.sqlite-shm",
        "jupyterhub_cookie_secret",
    ):
        if (old / name).exists() and not (new / name).exists():
            new.mkdir(parents=True, exist_ok=True)
            shutil.move(old / name, new / name)
            os.chmod(new / name, 0o600)  # an older hubfleet left it readable; JupyterHub refuses that
            moved.append(f"{old / name} -> {new / name}")
    for stale in ("jupyterhub_config.py", "proxy.pid"):
        (old / stale).unlink(missing_ok=True)
    old_homes = old / "homes"
    if old_homes.is_dir():
        homes = layout.homes(hub)
        homes.mkdir(parents=True, exist_ok=True)
        for home in sorted(old_homes.iterdir()):
            target = homes / home_name(home.name)
            if target.exists():
                log.warning("hub %s: %s kept: %s exists already; merge them by hand", hub, home, target)
                continue
            shutil.move(home, target)
            moved.append(f"{home} -> {target}")
        if not any(old_homes.iterdir()):
            old_homes.rmdir()
    for line in moved:
        log.info("hub %s: moved %s", hub, line)
    return moved

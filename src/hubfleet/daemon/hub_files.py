"""What a local hub needs before it starts: its files where it can reach them and, as root, its own service
account that owns them and the broker socket through which it asks for its users' servers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
from pathlib import Path

from hubfleet.backends.local import BIN_DIR, PATH, PreparedHub
from hubfleet.daemon.broker import Broker, HubPolicy
from hubfleet.isolation.accounts import (
    Account,
    AccountError,
    check_username,
    comment_for,
    ensure_account,
    ensure_home,
    home_dirname,
    hub_account,
)
from hubfleet.isolation.cgroups import Limits, parse_memory
from hubfleet.ports import RANGE_ENV
from hubfleet.render.local import CONTROL_TOKEN_ENV, OPERATOR_TOKEN_ENV
from hubfleet.runtime.layout import Layout, make_passable_dir, migrate_hub, write_private


async def prepare_hub(where: Layout, broker: Broker | None, prepared: PreparedHub) -> Account | None:
    """The hub's data directory (moved from an older layout if need be) and config; with a broker, also the
    hub's service account, which then owns the directory, and its socket. Returns the account to run as."""
    name = prepared.name
    migrate_hub(where, name, home_name)
    for directory in (where.data_dir, prepared.data_dir.parent, where.homes(name).parent, where.homes(name)):
        make_passable_dir(directory)
    if broker is None:
        prepared.data_dir.mkdir(mode=0o700, exist_ok=True)
        prepared.config_path.write_text(prepared.rendered)
        write_hub_files(prepared, None)
        return None
    comment = comment_for(where.instance, name, "hub")
    account = await asyncio.to_thread(
        ensure_account, hub_account(where.instance, name), home=prepared.data_dir, comment=comment
    )
    await asyncio.to_thread(ensure_home, prepared.data_dir, account)
    write_owned(prepared.config_path, prepared.rendered, account)
    await asyncio.to_thread(write_hub_files, prepared, account)
    await broker.serve(broker_policy(where, prepared, account))
    return account


def broker_policy(where: Layout, prepared: PreparedHub, account: Account) -> HubPolicy:
    """What the broker enforces for the hub's users, from the fleet files (never from the hub)."""
    resources = prepared.resources
    memory = resources.get("memory_limit")
    return HubPolicy(
        hub=prepared.name,
        hub_uid=account.uid,
        limits=Limits(
            memory_bytes=parse_memory(memory) if memory else None,
            cpu_cores=resources.get("cpu_limit"),
            pids=resources.get("process_limit"),
        ),
        memory_text=memory,
        db_path=prepared.data_dir / "jupyterhub.sqlite",
        homes=where.homes(prepared.name),
        log_path=prepared.log_path,
        command=[str(BIN_DIR / "jupyterhub-singleuser")],
        path_env=PATH,
        user_database=prepared.user_database,
        environments=prepared.environments,
        spawner=prepared.spawner,
    )


def home_name(username: str) -> str:
    """The name of a user's home now, for a home an older hubfleet named by the raw username."""
    try:
        return home_dirname(check_username(username))
    except AccountError:
        return username


def plain_env() -> dict[str, str]:
    """What a hub inherits from the daemon: nothing that could carry a secret (an age identity, tokens)."""
    keep = ("LANG", "LC_ALL", "TZ", "PYTHONPATH", RANGE_ENV)
    return {key: os.environ[key] for key in keep if key in os.environ}


def write_owned(path: Path, text: str, account: Account) -> None:
    """Write into a directory the hub's account owns without following a link it may have planted."""
    tmp = path.with_name(f".{path.name}.hubfleet-tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        os.fchown(fd, account.uid, account.gid)
    os.replace(tmp, path)


def write_hub_files(prepared: PreparedHub, account: Account | None) -> None:
    """The files the hub reads beside its config (`PreparedHub.files`: its branding), owned by its account.

    The data directory is the hub's own, so a link it planted is never followed: each directory is opened
    relative to its parent's descriptor with O_NOFOLLOW (a link or file in a directory's place is removed
    first), and each file is written to a fresh temporary name and renamed over the old one."""
    for relative, encoded in sorted(prepared.files.items()):
        parts = [p for p in relative.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise ValueError(f"hub {prepared.name}: refusing hub file path {relative!r}")
        fd = os.open(prepared.data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            for part in parts[:-1]:
                fd = _enter_dir(fd, part, account)
            _write_at(fd, parts[-1], base64.b64decode(encoded), account)
        finally:
            os.close(fd)


def _enter_dir(parent: int, name: str, account: Account | None) -> int:
    """Directory `name` under `parent`, opened (made if missing; a link or file there replaced).
    Closes `parent`."""
    try:
        try:
            return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        except FileNotFoundError:
            pass
        except OSError:  # a link (ELOOP) or a file (ENOTDIR) in its place
            os.unlink(name, dir_fd=parent)
        os.mkdir(name, 0o755, dir_fd=parent)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        if account is not None:
            os.fchown(fd, account.uid, account.gid)
        return fd
    finally:
        os.close(parent)


def _write_at(directory: int, name: str, data: bytes, account: Account | None) -> None:
    tmp = f".{name}.hubfleet-tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=directory)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=directory)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        if account is not None:
            os.fchown(fd, account.uid, account.gid)
    os.replace(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)


def lost_state(where: Layout, name: str) -> list[str]:
    """What the control plane's files about a hub that ran before no longer hold (checked before they are
    made again): one sentence each, for the operator."""
    directory = where.hub_state(name)
    missing = [f for f in ("tokens.json", "runtime.json") if not (directory / f).exists()]
    if not missing:
        return []
    return [
        f"hub {name}: its state files in {directory} are gone ({', '.join(missing)}): new service tokens and "
        "internal ports are made; its earlier hub.log is lost"
    ]


def lost_data(where: Layout, name: str) -> list[str]:
    """What a hub that ran before lost from its data directory (checked before it starts again)."""
    database = where.hub_data(name) / "jupyterhub.sqlite"
    if database.exists():
        return []
    homes = where.homes(name)
    kept = (
        f"the homes in {homes} are kept"
        if homes.is_dir() and any(homes.iterdir())
        else f"no home is left in {homes}"
    )
    return [
        f"hub {name}: its database {database} is gone: every user of this hub, their server records, API "
        f"tokens and sign-in cookies are lost; the hub starts with an empty database ({kept})"
    ]


_PORTS = re.compile(
    r"c\.JupyterHub\.hub_port = (\d+).*?ConfigurableHTTPProxy\.api_url = 'http://127\.0\.0\.1:(\d+)'", re.S
)


_SUPPORT_PORT = re.compile(r"\{'name': 'support', 'url': 'http://127\.0\.0\.1:(\d+)'")


def restore_state_files(prepared: PreparedHub) -> list[str]:
    """A running hub's tokens.json and runtime.json, written again from what it runs when they vanished
    (so `status`, `token` and `check` reach it). Returns what was written."""
    directory = prepared.log_path.parent
    written = []
    tokens_path = directory / "tokens.json"
    if not tokens_path.exists() and {CONTROL_TOKEN_ENV, OPERATOR_TOKEN_ENV} <= prepared.env.keys():
        tokens = {"control": prepared.env[CONTROL_TOKEN_ENV], "operator": prepared.env[OPERATOR_TOKEN_ENV]}
        write_private(tokens_path, json.dumps(tokens, indent=2))
        written.append(str(tokens_path))
    runtime_path = directory / "runtime.json"
    ports = _PORTS.search(prepared.rendered)
    if not runtime_path.exists() and ports:
        runtime = {"hub_port": int(ports[1]), "proxy_api_port": int(ports[2]), "url": prepared.url}
        if support := _SUPPORT_PORT.search(prepared.rendered):  # the support service's (support_hook.py)
            runtime["support_port"] = int(support[1])
        write_private(runtime_path, json.dumps(runtime, indent=2))
        written.append(str(runtime_path))
    return written

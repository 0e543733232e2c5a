"""Upgrading a fleet from the older single-tree layout: nothing its users or hubs had may be lost.

An older hubfleet kept everything under the state directory, readable by all: each hub's database, cookie
secret and its users' homes (`<state>/hubs/<hub>/{jupyterhub.sqlite, jupyterhub_cookie_secret,
homes/<username>/}`), all owned by the account that ran it. This builds such a tree from a real run (real hub
database with real users), then runs `hubfleet up` of today on it and checks that the hub still knows its
users and its cookie secret, that the homes reach the data directory and, once their servers start, belong to
the users' own accounts, and that the state directory has become private with nothing left at the old paths.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet_helpers import copy_demo_fleet, daemon_status, hubfleet, kill_leftovers, running_fleet, wait_for
from hubfleet.isolation.accounts import home_dirname, hub_account, user_account
from hubfleet.runtime.layout import Layout, layout

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="hub and user accounts need root"),
]

HUB = "uni-a-staging"
USERS = ("keeper", "josé")
OLD_FILES = ("jupyterhub.sqlite", "jupyterhub_cookie_secret", "jupyterhub_config.py", "proxy.pid", "homes")


@dataclass
class Migrated:
    root: Path
    where: Layout
    cookie_secret: bytes
    client: httpx.Client
    servers: dict[str, dict[str, Any]]

    @property
    def old(self) -> Path:
        return self.root / ".hubfleet" / "hubs" / HUB

    def home(self, user: str) -> Path:
        return self.where.homes(HUB) / home_dirname(user)

    def account(self, user: str) -> pwd.struct_passwd:
        return pwd.getpwnam(user_account(self.where.instance, HUB, user))


def admin_client(root: Path) -> httpx.Client:
    token = hubfleet("token", HUB, fleet=root, check=True).stdout.strip()
    url = daemon_status(root)["hubs"][HUB]["url"]
    return httpx.Client(base_url=url, headers={"Authorization": f"token {token}"}, timeout=30)


def make_old_layout(root: Path) -> bytes:
    """Turn the stopped fleet's state into what the older hubfleet left: the hub's database and cookie
    secret and its users' homes (named by username) back in the state tree, owned by root, readable by all;
    no data directory and no layout.json. Returns the cookie secret."""
    state = root / ".hubfleet"
    where = layout(state)
    old = state / "hubs" / HUB
    for name in ("jupyterhub.sqlite", "jupyterhub_cookie_secret"):
        shutil.move(where.hub_data(HUB) / name, old / name)
    (old / "jupyterhub_config.py").write_text("# the older hubfleet's config, rendered for root\n")
    (old / "proxy.pid").write_text("999999\n")
    for user in USERS:
        home = old / "homes" / user  # the older SimpleLocalProcessSpawner's home_dir_template: {username}
        (home / "bin").mkdir(parents=True)
        (home / "notes.txt").write_text(f"{user}'s notes, keep me\n")
        (home / "bin" / "run.sh").write_text("#!/bin/sh\necho ran\n")
    shutil.rmtree(where.data_dir)
    (state / "layout.json").unlink()
    for directory, dirs, files in os.walk(state):
        os.lchown(directory, 0, 0)
        os.chmod(directory, 0o755)
        for name in dirs + files:
            path = Path(directory) / name
            os.lchown(path, 0, 0)
            if not path.is_symlink() and path.is_file():
                os.chmod(path, 0o755 if name == "run.sh" else 0o644)
    return (old / "jupyterhub_cookie_secret").read_bytes()


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Migrated]:
    root = copy_demo_fleet(
        tmp_path_factory.mktemp("migration") / "demo", keep={"communities/uni-a/hubs/staging.yaml"}
    )
    try:
        hubfleet("up", "--detach", fleet=root, check=True)
        with admin_client(root) as client:
            for user in USERS:
                assert client.post(f"/hub/api/users/{user}").status_code == 201
    finally:
        hubfleet("down", fleet=root, check=True)
        assert not kill_leftovers(root)
    cookie_secret = make_old_layout(root)

    with running_fleet(root), admin_client(root) as client:
        where = layout(root / ".hubfleet")
        for user in USERS:
            client.post(f"/hub/api/users/{user}/server")

        def ready(user: str) -> dict[str, Any] | None:
            server = client.get(f"/hub/api/users/{user}").json().get("servers", {}).get("")
            return server if server and server.get("ready") else None

        servers = {user: wait_for(lambda user=user: ready(user)) for user in USERS}
        yield Migrated(root, where, cookie_secret, client, servers)


def test_the_hub_keeps_its_users_and_cookie_secret(migrated: Migrated) -> None:
    """The database moved, not recreated: users made before the upgrade are there; so is the cookie secret
    (its loss would sign everyone out), now the hub account's and private."""
    names = {user["name"] for user in migrated.client.get("/hub/api/users").json()}
    assert {"keeper", "josé", "grace", "ada"} <= names
    data = migrated.where.hub_data(HUB)
    secret = data / "jupyterhub_cookie_secret"
    assert secret.read_bytes() == migrated.cookie_secret
    hub_uid = pwd.getpwnam(hub_account(migrated.where.instance, HUB)).pw_uid
    for path in (data, data / "jupyterhub.sqlite", secret):
        st = path.lstat()
        assert st.st_uid == hub_uid, path
        assert stat.S_IMODE(st.st_mode) & 0o077 == 0, path


def test_state_dir_is_private_and_nothing_is_left_at_the_old_paths(migrated: Migrated) -> None:
    """The control plane's tree is its own again (0700, files 0600), and it no longer holds any hub's data:
    only the control plane's files about the hub remain where the database, secret and homes were."""
    state = migrated.root / ".hubfleet"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for directory, dirs, files in os.walk(state):
        for name in dirs:
            assert stat.S_IMODE((Path(directory) / name).lstat().st_mode) == 0o700, name
        for name in files:
            path = Path(directory) / name
            assert stat.S_IMODE(path.lstat().st_mode) == 0o600, path
    for name in OLD_FILES:
        assert not (migrated.old / name).exists(), name
    assert {p.name for p in migrated.old.iterdir()} <= {"tokens.json", "runtime.json", "hub.log"}


def test_a_home_reaches_the_data_dir_and_its_users_account(migrated: Migrated) -> None:
    """keeper's server runs as keeper's account in the moved home, which is now that account's (0700) with
    everything in it, and the server itself reads the file written before the upgrade."""
    account = migrated.account("keeper")
    home = migrated.home("keeper")
    assert home == migrated.where.data_dir / "homes" / HUB / "keeper"
    st = home.lstat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert (st.st_uid, st.st_gid) == (account.pw_uid, account.pw_gid)
    for path in (home / "notes.txt", home / "bin", home / "bin" / "run.sh"):
        assert path.lstat().st_uid == account.pw_uid, path
    assert (home / "notes.txt").read_text() == "keeper's notes, keep me\n"
    server = migrated.servers["keeper"]
    content = migrated.client.get(f"{server['url']}api/contents/notes.txt").json()
    assert content["content"] == "keeper's notes, keep me\n"


def test_user_files_keep_their_modes(migrated: Migrated) -> None:
    """Making the state tree private must not touch what is the users': an executable script stays
    executable for its owner after the move."""
    script = migrated.home("keeper") / "bin" / "run.sh"
    assert stat.S_IMODE(script.lstat().st_mode) & 0o700 == 0o700, oct(script.lstat().st_mode)


def test_a_non_ascii_users_home_is_the_one_their_server_uses(migrated: Migrated) -> None:
    """The older layout named homes by the raw username ("josé"); today's homes of such names are escaped
    ("jos%C3%A9"). The moved home must be the one josé's server runs in, or their files are stranded."""
    server = migrated.servers["josé"]
    listing = migrated.client.get(f"{server['url']}api/contents/").json()
    assert "notes.txt" in {item["name"] for item in listing["content"]}, listing
    assert not (migrated.where.homes(HUB) / "josé").exists()

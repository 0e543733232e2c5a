"""hubfleet without root: the real CLI run by an ordinary account, as `make demo` on a laptop would.

Without root there are no per-user accounts and no limits, so every hub and user server runs as the one
account that ran `hubfleet up`, and prod hubs refuse to start that way unless fleet.yaml accepts it
(`isolation: {single_account_prod: true}`, as the demo fleet does). The account is made for the test (under
a test instance id, home in a passable temporary directory) and owns its copies of the demo fleet; commands
run through setpriv with a clean environment, so nothing of root's (or an age identity) leaks in.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from fleet_helpers import (
    HUBFLEET,
    alive,
    copy_demo_fleet,
    daemon_status,
    drop_section,
    kill_leftovers,
    wait_for,
)
from hubfleet.isolation.accounts import Account, comment_for, ensure_account, remove_account, user_account

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="creates the unprivileged account that runs hubfleet"),
]

HUBS = {"communities/uni-a/hubs/staging.yaml", "communities/uni-a/hubs/prod.yaml"}
SINGLE_LINE = "isolation: single-account mode (hubfleet is not root)"


@dataclass
class Runner:
    """An ordinary account that runs hubfleet."""

    account: Account
    base: Path

    def hubfleet(self, *args: str, fleet: Path) -> subprocess.CompletedProcess[str]:
        env = {
            "HOME": str(self.account.home),
            "PATH": f"{HUBFLEET.parent}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
        }
        return subprocess.run(
            ["setpriv", f"--reuid={self.account.uid}", f"--regid={self.account.gid}", "--clear-groups",
             str(HUBFLEET), *args, "--fleet", str(fleet)],
            capture_output=True, text=True, timeout=240, env=env, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def fleet(self, name: str, *, opt_in: bool) -> Path:
        """A copy of the demo fleet (uni-a's staging and prod hubs) that the account owns."""
        root = copy_demo_fleet(self.base / name, keep=HUBS)
        if not opt_in:
            fleet_yaml = root / "fleet.yaml"
            fleet_yaml.write_text(drop_section(fleet_yaml.read_text(), "isolation"))
            assert "single_account_prod" not in fleet_yaml.read_text()
        for directory, dirs, files in os.walk(root):
            os.lchown(directory, self.account.uid, self.account.gid)
            for entry in dirs + files:
                os.lchown(Path(directory) / entry, self.account.uid, self.account.gid)
        return root

    def processes(self) -> list[psutil.Process]:
        """Every live process of the account (there is no other reason for one to run)."""
        found = []
        for proc in psutil.process_iter(["uids"]):
            if proc.info["uids"] and proc.info["uids"].real == self.account.uid and alive(proc):
                found.append(proc)
        return found


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    base = tmp_path_factory.mktemp("single")
    instance = "t" + secrets.token_hex(4)[:7]
    name = user_account(instance, "single-test", "runner")
    home = base / "home"
    home.mkdir(mode=0o700)
    account = ensure_account(name, home=home, comment=comment_for(instance, "single-test", "user"))
    os.chown(home, account.uid, account.gid)
    try:
        yield Runner(account, base)
    finally:
        remove_account(name)


def uid_of(pid: int) -> int:
    return psutil.Process(pid).uids().real


def test_with_the_opt_in_every_hub_and_server_runs_as_the_account(runner: Runner) -> None:
    """The demo fleet accepts single-account prod hubs: both hubs start, the daemon, the hubs and a user's
    server all run as the account that ran `up` (no per-user accounts without root), and `down` stops all."""
    root = runner.fleet("opt-in", opt_in=True)
    uid = runner.account.uid
    try:
        up = runner.hubfleet("up", "--detach", fleet=root)
        assert up.returncode == 0, up.stdout + up.stderr
        assert SINGLE_LINE in up.stdout
        status = daemon_status(root)
        assert f"every hub and user server runs as uid {uid}" in status["isolation"]
        assert uid_of(status["pid"]) == uid
        for hub in ("uni-a", "uni-a-staging"):
            assert status["hubs"][hub]["state"] == "running", status["hubs"][hub]
            assert uid_of(status["hubs"][hub]["pid"]) == uid
        assert (root / ".hubfleet").stat().st_uid == uid

        token = runner.hubfleet("token", "uni-a", fleet=root)
        assert token.returncode == 0, token.stderr
        headers = {"Authorization": f"token {token.stdout.strip()}"}
        with httpx.Client(base_url=status["hubs"]["uni-a"]["url"], headers=headers, timeout=30) as client:
            assert client.post("/hub/api/users/solo").status_code == 201
            client.post("/hub/api/users/solo/server")

            def ready() -> dict[str, Any] | None:
                server = client.get("/hub/api/users/solo").json().get("servers", {}).get("")
                return server if server and server.get("ready") else None

            server = wait_for(ready)
            server_pid = server["state"]["pid"]
            assert "jupyterhub-singleuser" in " ".join(psutil.Process(server_pid).cmdline())
            assert uid_of(server_pid) == uid
            assert client.get(f"{server['url']}api/status").status_code == 200
        home = root / ".hubfleet-data" / "homes" / "uni-a" / "solo"
        assert home.is_dir() and home.stat().st_uid == uid
        running = runner.processes()
        assert {status["pid"], server_pid} <= {p.pid for p in running}

        down = runner.hubfleet("down", fleet=root)
        assert down.returncode == 0, down.stdout + down.stderr
        assert "stopped 2 hub(s)" in down.stdout
        assert not [p for p in running if alive(p)]
        assert runner.processes() == []
    finally:
        runner.hubfleet("down", fleet=root)
        assert not kill_leftovers(root)


def test_without_the_opt_in_prod_hubs_refuse_and_staging_runs(runner: Runner) -> None:
    """Without `single_account_prod` a prod hub will not share one account with its users: it fails with a
    message that names the setting, while the staging hub runs (as the account)."""
    root = runner.fleet("no-opt-in", opt_in=False)
    try:
        up = runner.hubfleet("up", "--detach", fleet=root)
        assert up.returncode == 1, up.stdout + up.stderr
        assert SINGLE_LINE in up.stdout
        said = " ".join(up.stderr.split())
        assert "hub uni-a failed to start: prod hub uni-a refused in single-account mode" in said
        assert "isolation: {single_account_prod: true}" in said
        assert "uni-a-staging failed" not in said
        hubs = daemon_status(root)["hubs"]
        assert hubs["uni-a"]["state"] == "failed" and hubs["uni-a"]["pid"] is None
        assert hubs["uni-a-staging"]["state"] == "running"
        assert uid_of(hubs["uni-a-staging"]["pid"]) == runner.account.uid
        assert httpx.get(f"{hubs['uni-a-staging']['url']}/hub/health").status_code == 200
        prod = (root / "communities/uni-a/hubs/prod.yaml").read_text()
        port = next(line.split()[1] for line in prod.splitlines() if line.startswith("port:"))
        with pytest.raises(httpx.ConnectError):  # nothing listens where the prod hub would
            httpx.get(f"http://127.0.0.1:{port}/hub/health")
    finally:
        down = runner.hubfleet("down", fleet=root)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not kill_leftovers(root)
        assert runner.processes() == []

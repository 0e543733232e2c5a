"""Fault injection with real processes: a killed daemon, a killed proxy, a vanished hub directory, two `up` at
once. Each test asserts what the operator sees and that nothing of the fleet is left running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from fleet_helpers import (
    HUBFLEET,
    alive,
    command_of,
    copy_demo_fleet,
    daemon_status,
    fleet_processes,
    hubfleet,
    hubfleet_env,
    kill_leftovers,
    remove_accounts,
    wait_for,
)
from hubfleet.isolation.accounts import fleet_accounts

pytestmark = pytest.mark.integration

UNI_A = "communities/uni-a/hubs/staging.yaml"
HACKWEEK = "communities/hackweek/hubs/staging.yaml"


@pytest.fixture
def root(tmp_path: Path):
    """A one-hub copy of the demo fleet (uni-a-staging); whatever a test leaves running fails it."""
    fleet = copy_demo_fleet(tmp_path / "fleet", keep={UNI_A})
    yield fleet
    hubfleet("down", fleet=fleet)
    leaks = kill_leftovers(fleet) + [str(p.pid) for p in account_processes(fleet)]
    for proc in account_processes(fleet):
        proc.kill()
    remove_accounts(fleet)
    assert not leaks, f"processes left: {leaks}"


def account_processes(fleet: Path) -> list[psutil.Process]:
    """Live processes running as one of the fleet's OS accounts (as root)."""
    layout_file = fleet / ".hubfleet" / "layout.json"
    if os.geteuid() != 0 or not layout_file.exists():
        return []
    uids = {a.uid for a in fleet_accounts(json.loads(layout_file.read_text())["instance"])}
    found = []
    for proc in psutil.process_iter(["uids"]):
        try:
            if proc.info["uids"] and proc.info["uids"].real in uids and alive(proc):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def everything(fleet: Path) -> list[psutil.Process]:
    by_pid = {p.pid: p for p in fleet_processes(fleet) + account_processes(fleet)}
    return list(by_pid.values())


def hub_processes(fleet: Path) -> list[psutil.Process]:
    """The JupyterHub processes (not servers, not the proxy) of the fleet."""
    found = []
    for proc in everything(fleet):
        cmd = command_of(proc).split()
        if any(part.endswith("/jupyterhub") for part in cmd[:2]) and "-f" in cmd:
            found.append(proc)
    return found


def admin(fleet: Path, hub: str) -> httpx.Client:
    token = hubfleet("token", hub, fleet=fleet, check=True).stdout.strip()
    url = daemon_status(fleet)["hubs"][hub]["url"]
    return httpx.Client(base_url=url, headers={"Authorization": f"token {token}"}, timeout=30)


def start_server_with_kernel(client: httpx.Client, user: str) -> None:
    client.post(f"/hub/api/users/{user}")
    client.post(f"/hub/api/users/{user}/server")

    def ready():  # noqa: ANN202
        server = client.get(f"/hub/api/users/{user}").json().get("servers", {}).get("")
        return server if server and server.get("ready") else None

    server = wait_for(ready, timeout=90)
    assert client.post(f"{server['url']}api/kernels").json()["name"] == "python3"


def kinds(procs: list[psutil.Process]) -> str:
    return " | ".join(command_of(p)[:100] for p in procs if alive(p))


def status_of(fleet: Path) -> dict[str, dict]:
    result = hubfleet("status", "--json", fleet=fleet)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "never awaited" not in result.stderr and "Traceback" not in result.stderr
    return {h["name"]: h for h in json.loads(result.stdout)["hubs"]}


def test_killed_daemon_then_up_runs_one_set_and_down_leaves_nothing(root: Path) -> None:
    hubfleet("up", "--detach", fleet=root, check=True)
    start_server_with_kernel(admin(root, "uni-a-staging"), "kim")
    first = everything(root)
    assert any("ipykernel" in command_of(p) for p in first)
    daemon = daemon_status(root)["pid"]
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(daemon) or not alive(psutil.Process(daemon)), timeout=10)

    # without its daemon the hub still answers: status says so rather than `stopped`
    assert status_of(root)["uni-a-staging"]["state"] == "unsupervised"

    result = hubfleet("up", "--detach", fleet=root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "did not stop cleanly" in result.stderr
    assert "user server" in result.stderr  # the operator learns the servers were stopped
    assert not [p for p in first if alive(p)], f"the first set still runs: {kinds(first)}"
    assert len(hub_processes(root)) == 1
    assert status_of(root)["uni-a-staging"]["state"] == "running"
    assert "already in use" not in (root / ".hubfleet/daemon.log").read_text()

    # the users and their files survived; the server starts again
    client = admin(root, "uni-a-staging")
    assert client.get("/hub/api/users/kim").status_code == 200
    start_server_with_kernel(client, "kim")

    # kill the daemon again, then the proxy: the old hub restarts its proxy on its own, unsupervised
    daemon = daemon_status(root)["pid"]
    proxy_file = root / ".hubfleet-data/hubs/uni-a-staging/proxy.pid"
    os.kill(daemon, signal.SIGKILL)
    proxy = int(proxy_file.read_text())
    os.kill(proxy, signal.SIGKILL)
    wait_for(lambda: proxy_file.exists() and int(proxy_file.read_text() or 0) not in (0, proxy), timeout=60)
    before = everything(root)

    result = hubfleet("down", fleet=root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "left behind" in result.stdout
    assert "configurable-http-proxy" in result.stdout and "jupyterhub-singleuser" in result.stdout
    assert not [p for p in before if alive(p)], f"left after down: {kinds(before)}"
    assert not everything(root)


def test_killed_proxy_then_down_leaves_nothing(root: Path) -> None:
    hubfleet("up", "--detach", fleet=root, check=True)
    start_server_with_kernel(admin(root, "uni-a-staging"), "lee")
    proxy = int((root / ".hubfleet-data/hubs/uni-a-staging/proxy.pid").read_text())
    os.kill(proxy, signal.SIGKILL)
    before = everything(root)

    result = hubfleet("down", fleet=root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stopped 1 hub" in result.stdout
    assert not [p for p in before if alive(p)], f"left after down: {kinds(before)}"
    # a proxy the hub restarted meanwhile would have been stopped as well
    time.sleep(1)
    assert not everything(root)


def test_two_up_at_once_start_one_daemon(root: Path) -> None:
    env = hubfleet_env()
    procs = [
        subprocess.Popen(
            [str(HUBFLEET), "up", "--detach", "--fleet", str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=240), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, _, err in results if code == 1)
    assert "already up" in loser and "Traceback" not in loser
    daemons = [p for p in fleet_processes(root) if "hubfleet.up" in command_of(p)]
    assert len(daemons) == 1
    assert daemons[0].pid == daemon_status(root)["pid"]
    assert len(hub_processes(root)) == 1
    assert status_of(root)["uni-a-staging"]["state"] == "running"


def test_vanished_hub_directories(tmp_path: Path) -> None:
    fleet = copy_demo_fleet(tmp_path / "fleet", keep={UNI_A, HACKWEEK})
    try:
        hubfleet("up", "--detach", fleet=fleet, check=True)
        start_server_with_kernel(admin(fleet, "uni-a-staging"), "mo")
        servers = [p for p in everything(fleet) if "jupyterhub-singleuser" in command_of(p)]
        assert len(servers) == 1
        shutil.rmtree(fleet / ".hubfleet/hubs/uni-a-staging")
        shutil.rmtree(fleet / ".hubfleet-data/hubs/uni-a-staging")

        # the rest of the fleet's status keeps working; the damaged hub says why it cannot be asked
        hubs = status_of(fleet)
        assert hubs["hackweek-staging"]["state"] == "running"
        assert hubs["hackweek-staging"]["version"].startswith("6.")
        assert "missing" in hubs["uni-a-staging"]["api_error"]
        for command in (("token", "uni-a-staging"), ("check", "uni-a-staging")):
            result = hubfleet(*command, fleet=fleet)
            assert result.returncode == 1
            assert "state files" in result.stderr and "missing" in result.stderr, result.stderr
            assert "Traceback" not in result.stderr

        # the hub restarts (as after a crash): the operator is told what was lost, the orphan is stopped
        os.kill(daemon_status(fleet)["hubs"]["uni-a-staging"]["pid"], signal.SIGKILL)

        def restarted():  # noqa: ANN202
            hub = daemon_status(fleet)["hubs"]["uni-a-staging"]
            return hub if hub["state"] == "running" and hub["warnings"] else None

        hub = wait_for(restarted, timeout=90)
        warnings = " ".join(hub["warnings"])
        assert "database" in warnings and "users" in warnings and "orphaned" in warnings
        assert not [p for p in servers if alive(p)], "the orphaned user server still runs"
        assert "database" in (fleet / ".hubfleet/daemon.log").read_text()
        hubs = status_of(fleet)
        assert hubs["uni-a-staging"]["users"] is not None  # reachable again: token files written back
        assert hubfleet("token", "uni-a-staging", fleet=fleet).returncode == 0

        # down, then delete again while down: the next `up` says what is gone
        hubfleet("down", fleet=fleet, check=True)
        shutil.rmtree(fleet / ".hubfleet/hubs/uni-a-staging")
        shutil.rmtree(fleet / ".hubfleet-data/hubs/uni-a-staging")
        result = hubfleet("up", "--detach", fleet=fleet)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "database" in result.stderr and "state files" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    finally:
        hubfleet("down", fleet=fleet)
        leaks = kill_leftovers(fleet) + [str(p.pid) for p in account_processes(fleet)]
        remove_accounts(fleet)
        assert not leaks, f"processes left: {leaks}"

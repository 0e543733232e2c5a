"""Integration: real JupyterHub processes of a demo fleet under the hubfleet daemon (no mocks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
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
    running_fleet,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    with running_fleet(copy_demo_fleet(tmp_path_factory.mktemp("fleet") / "demo")) as root:
        yield root


def admin_client(fleet: Path, hub: str) -> tuple[httpx.Client, str]:
    token = hubfleet("token", hub, fleet=fleet, check=True).stdout.strip()
    url = daemon_status(fleet)["hubs"][hub]["url"]
    return httpx.Client(base_url=url, headers={"Authorization": f"token {token}"}, timeout=30), url


def start_server(client: httpx.Client, user: str) -> dict:
    client.post(f"/hub/api/users/{user}")
    client.post(f"/hub/api/users/{user}/server")  # may answer 500 on a slow spawn; poll the model instead

    def ready():  # noqa: ANN202
        model = client.get(f"/hub/api/users/{user}").json()
        server = model.get("servers", {}).get("")
        return server if server and server.get("ready") else None

    return wait_for(ready, timeout=90)


def test_status_reports_every_hub_running(fleet: Path) -> None:
    result = hubfleet("status", "--json", fleet=fleet, check=True)
    hubs = {h["name"]: h for h in json.loads(result.stdout)["hubs"]}
    assert set(hubs) == {"uni-a", "uni-a-staging", "hackweek", "hackweek-staging"}
    for hub in hubs.values():
        assert hub["state"] == "running"
        assert hub["version"].startswith("6.")
        assert hub["url"].startswith("http://127.0.0.1:")
        assert {"community", "users", "running_servers", "restarts"} <= hub.keys()
    # the fleet's staff member and the community admin are pre-created admins
    assert hubs["uni-a"]["users"] == 2


def test_operator_token_has_admin_scopes_and_control_token_is_least_privilege(fleet: Path) -> None:
    client, url = admin_client(fleet, "uni-a")
    assert client.post("/hub/api/users/token-made-user").status_code == 201
    admins = {u["name"] for u in client.get("/hub/api/users").json() if u["admin"]}
    assert admins == {"grace", "ada"}
    control = json.loads((fleet / ".hubfleet/hubs/uni-a/tokens.json").read_text())["control"]
    with httpx.Client(base_url=url, headers={"Authorization": f"token {control}"}) as weak:
        assert weak.get("/hub/api/users").status_code == 200
        # outside its scopes JupyterHub answers 403, or 404 where it hides whether the user exists
        assert weak.post("/hub/api/users/someone-else").status_code in (403, 404)
        assert weak.post("/hub/api/users/token-made-user/server").status_code in (403, 404)
        assert weak.post("/hub/api/shutdown").status_code == 403
    assert client.get("/hub/api/users/someone-else").status_code == 404
    assert client.get("/hub/api/users/token-made-user").json()["server"] is None


def test_check_passes_and_is_stored(fleet: Path) -> None:
    result = hubfleet("check", "hackweek-staging", "--json", fleet=fleet)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    # hackweek-staging is a dummy hub: the check signs in through its login form with the shared password
    assert [s["name"] for s in report["steps"]][:3] == ["sign_in", "create_user", "start_server"]
    history = json.loads(hubfleet("history", "hackweek-staging", "--json", fleet=fleet, check=True).stdout)[
        "events"
    ]
    kinds = [e["kind"] for e in history]
    assert "check" in kinds and "deployment" in kinds


def test_killed_hub_is_restarted_and_user_server_survives(fleet: Path) -> None:
    client, _ = admin_client(fleet, "uni-a")
    server = start_server(client, "survivor")
    home = fleet / ".hubfleet-data/homes/uni-a/survivor"
    assert home.is_dir()
    server_pids = [
        p.pid
        for p in fleet_processes(fleet)
        if "jupyterhub-singleuser" in command_of(p) and str(home) in (p.info["cwd"] or "")
    ]
    assert len(server_pids) == 1
    old_pid = daemon_status(fleet)["hubs"]["uni-a"]["pid"]

    os.kill(old_pid, signal.SIGKILL)

    def restarted():  # noqa: ANN202
        hub = daemon_status(fleet)["hubs"]["uni-a"]
        return hub if hub["state"] == "running" and hub["pid"] != old_pid else None

    hub = wait_for(restarted, timeout=90)
    assert hub["restarts"] == 1
    assert psutil.pid_exists(server_pids[0]), "the user server died with the hub"
    model = client.get("/hub/api/users/survivor").json()
    assert model["servers"][""]["ready"] is True
    # the server is reachable through the new hub's proxy
    assert client.get(f"{server['url']}api/status").status_code == 200
    history = json.loads(hubfleet("history", "uni-a", "--json", fleet=fleet, check=True).stdout)["events"]
    assert any(e["kind"] == "restart" for e in history)
    client.delete("/hub/api/users/survivor/server")


def test_up_twice_is_refused(fleet: Path) -> None:
    result = hubfleet("up", "--detach", fleet=fleet)
    assert result.returncode == 1
    assert "already up" in result.stderr and "Traceback" not in result.stderr


def test_down_stops_everything_and_up_keeps_users_and_files(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet", keep={"communities/uni-a/hubs/staging.yaml"})
    try:
        hubfleet("up", "--detach", fleet=root, check=True)
        client, _ = admin_client(root, "uni-a-staging")
        server = start_server(client, "keeper")
        kernel = client.post(f"{server['url']}api/kernels").json()
        assert kernel["name"] == "python3"
        client.put(
            f"{server['url']}api/contents/notes.txt",
            json={"type": "file", "format": "text", "content": "keep me"},
        )
        before = fleet_processes(root)
        assert any("ipykernel" in command_of(p) for p in before)

        result = hubfleet("down", fleet=root, check=True)
        assert "stopped 1 hub" in result.stdout
        assert not [p for p in before if alive(p)], "processes left after down"

        hubfleet("up", "--detach", fleet=root, check=True)
        client, _ = admin_client(root, "uni-a-staging")
        assert client.get("/hub/api/users/keeper").status_code == 200
        assert (root / ".hubfleet-data/homes/uni-a-staging/keeper/notes.txt").read_text() == "keep me"
    finally:
        hubfleet("down", fleet=root)
        assert not kill_leftovers(root)


def test_failing_hubs_are_named_with_their_log_and_others_keep_running(tmp_path: Path) -> None:
    root = copy_demo_fleet(
        tmp_path / "fleet",
        keep={
            "communities/uni-a/hubs/staging.yaml",
            "communities/hackweek/hubs/staging.yaml",
            "communities/hackweek/hubs/prod.yaml",
        },
    )
    broken = root / "communities/uni-a/hubs/staging.yaml"
    broken.write_text(
        broken.read_text() + "extra_config: |\n  raise RuntimeError('boom from extra_config')\n"
    )
    busy_port = int(
        next(
            line.split()[1]
            for line in (root / "communities/hackweek/hubs/staging.yaml").read_text().splitlines()
            if line.startswith("port:")
        )
    )
    blocker = subprocess.Popen(
        ["python3", "-m", "http.server", str(busy_port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: any(c.laddr.port == busy_port for c in psutil.Process(blocker.pid).net_connections())
        )
        result = hubfleet("up", "--detach", fleet=root)
        assert result.returncode == 1
        assert "hub uni-a-staging failed to start" in result.stderr
        assert "boom from extra_config" in result.stderr
        assert "hub hackweek-staging failed to start" in result.stderr
        assert f"port {busy_port} on 127.0.0.1 is already in use" in result.stderr
        assert "communities/hackweek/hubs/staging.yaml" in result.stderr
        assert "Traceback (most recent call last)" not in result.stderr.split("failed to start")[0]
        hubs = daemon_status(root)["hubs"]
        assert hubs["hackweek"]["state"] == "running"
        assert httpx.get(f"{hubs['hackweek']['url']}/hub/health").status_code == 200
        history = json.loads(hubfleet("history", "--json", fleet=root, check=True).stdout)["events"]
        failed = {e["hub"] for e in history if e["kind"] == "deployment" and not e["ok"]}
        assert failed == {"uni-a-staging", "hackweek-staging"}
    finally:
        blocker.kill()
        blocker.wait()
        hubfleet("down", fleet=root)
        assert not kill_leftovers(root)


def test_foreground_up_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet", keep={"communities/hackweek/hubs/staging.yaml"})
    env = hubfleet_env()
    proc = subprocess.Popen(
        [str(HUBFLEET), "up", "--fleet", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        wait_for(lambda: (root / ".hubfleet/daemon.json").exists() and daemon_status(root).get("ready"), 120)
        assert daemon_status(root)["hubs"]["hackweek-staging"]["state"] == "running"
        running = fleet_processes(root)
        assert running
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, output
        assert "stopped every hub" in output
        assert not [p for p in running if alive(p)]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert not kill_leftovers(root)


def test_up_refuses_an_invalid_fleet(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet", keep={"communities/uni-a/hubs/staging.yaml"})
    hub = root / "communities/uni-a/hubs/staging.yaml"
    hub.write_text(hub.read_text().replace("cluster: local", "cluster: locall"))
    result = hubfleet("up", "--detach", fleet=root)
    assert result.returncode == 1
    assert "communities/uni-a/hubs/staging.yaml:" in result.stderr
    assert "did you mean 'local'" in result.stderr
    assert not (root / ".hubfleet/daemon.json").exists()


def test_commands_name_an_unknown_or_unstarted_hub(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet", keep={"communities/uni-a/hubs/staging.yaml"})
    for command in ("check", "token"):
        unknown = hubfleet(command, "uni-a-stagin", fleet=root)
        assert unknown.returncode == 1
        assert (
            "no hub named 'uni-a-stagin'" in unknown.stderr
            and "did you mean 'uni-a-staging'" in unknown.stderr
        )
        unstarted = hubfleet(command, "uni-a-staging", fleet=root)
        assert unstarted.returncode == 1
        assert "never started" in unstarted.stderr and "hubfleet up" in unstarted.stderr
        assert "Traceback" not in unknown.stderr + unstarted.stderr
    status = json.loads(hubfleet("status", "--json", fleet=root, check=True).stdout)
    assert status["daemon"] is None and status["hubs"][0]["state"] == "stopped"
    assert "not up" in hubfleet("down", fleet=root, check=True).stdout

"""Integration: `hubfleet deploy` against a running demo fleet of real JupyterHubs (no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import select

from fleet_helpers import (
    command_of,
    copy_demo_fleet,
    daemon_status,
    edit,
    fleet_processes,
    hubfleet,
    running_fleet,
)
from hubfleet.store import open_store
from hubfleet.store.models import Maintenance
from test_local_fleet import admin_client, start_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    with running_fleet(copy_demo_fleet(tmp_path_factory.mktemp("deploy") / "demo")) as root:
        yield root


def pids(fleet: Path) -> dict[str, int]:
    return {name: hub["pid"] for name, hub in daemon_status(fleet)["hubs"].items()}


def deploy(fleet: Path, *args: str) -> tuple[int, dict]:
    result = hubfleet("deploy", "--json", *args, fleet=fleet, timeout=400)
    return result.returncode, json.loads(result.stdout)


def test_plan_is_empty_right_after_up(fleet: Path) -> None:
    plan = json.loads(hubfleet("plan", "--json", fleet=fleet, check=True).stdout)
    assert {h["action"] for h in plan["hubs"]} == {"unchanged"}
    code, result = deploy(fleet)
    assert code == 0 and result["deployed"] == []


def test_changed_hub_deploys_and_nothing_else_restarts_and_user_work_survives(fleet: Path) -> None:
    client, _ = admin_client(fleet, "uni-a")
    server = start_server(client, "student")
    client.put(
        f"{server['url']}api/contents/thesis.txt", json={"type": "file", "format": "text", "content": "ch1"}
    )
    server_pid = next(
        p.pid
        for p in fleet_processes(fleet)
        if "jupyterhub-singleuser" in command_of(p) and (p.info["cwd"] or "").endswith("/homes/uni-a/student")
    )
    before = pids(fleet)
    edit(fleet / "communities/uni-a/hubs/prod.yaml", "max_users: 100", "max_users: 150")

    code, result = deploy(fleet)

    assert code == 0, result
    assert result["deployed"] == ["uni-a"] and result["rolled_back"] == [] and result["skipped"] == []
    after = pids(fleet)
    assert after["uni-a"] != before["uni-a"]
    assert {k: v for k, v in after.items() if k != "uni-a"} == {
        k: v for k, v in before.items() if k != "uni-a"
    }
    # the user's server kept running through the hub restart and still serves their file
    assert psutil.pid_exists(server_pid)
    client, _ = admin_client(fleet, "uni-a")
    assert client.get("/hub/api/users/student").json()["servers"][""]["ready"] is True
    content = client.get(f"{server['url']}api/contents/thesis.txt").json()
    assert content["content"] == "ch1"
    assert json.loads(hubfleet("plan", "--json", fleet=fleet, check=True).stdout)["waves"] == [[], []]
    # the audit trail: who deployed and why; the hub's restart was planned maintenance
    history = json.loads(hubfleet("history", "uni-a", "--json", fleet=fleet, check=True).stdout)["events"]
    deployed = next(e for e in history if e["kind"] == "deployment")
    assert deployed["details"]["actor"].endswith("via hubfleet deploy")
    assert any("max_users" in reason for reason in deployed["details"]["reasons"])
    with open_store(fleet / ".hubfleet") as store, store.session() as session:
        windows = session.scalars(select(Maintenance).where(Maintenance.hub == "uni-a")).all()
    assert len(windows) == 1 and windows[0].finished_at is not None and windows[0].reason == "deploy (update)"
    client.delete("/hub/api/users/student/server")


def test_failing_staging_hub_is_rolled_back_and_its_prod_hub_untouched(fleet: Path) -> None:
    edit(
        fleet / "communities/hackweek/hubs/staging.yaml",
        "timeout: 1800",
        "timeout: 1800\nextra_config: |\n  raise RuntimeError('boom from extra_config')",
    )
    edit(fleet / "communities/hackweek/hubs/prod.yaml", "max_users: 200", "max_users: 201")
    edit(fleet / "communities/uni-a/hubs/staging.yaml", "admin_users: [grace]", "admin_users: [grace, ian]")
    before = pids(fleet)

    code, result = deploy(fleet, "--parallel", "2")

    assert code == 1
    outcomes = {h["name"]: h for h in result["hubs"]}
    assert result["rolled_back"] == ["hackweek-staging"]
    assert "boom from extra_config" in "\n".join(outcomes["hackweek-staging"]["log_tail"])
    assert "rolled back to the last good configuration" in outcomes["hackweek-staging"]["message"]
    assert result["skipped"] == ["hackweek"]
    assert result["deployed"] == ["uni-a-staging"]
    after = pids(fleet)
    assert after["hackweek"] == before["hackweek"], "the prod hub was touched"
    status = daemon_status(fleet)["hubs"]
    assert status["hackweek-staging"]["state"] == "running"
    assert httpx.get(f"{status['hackweek-staging']['url']}/hub/health").status_code == 200
    # the rolled-back hub runs its old configuration: the next plan still wants the change
    plan = {
        h["name"]: h for h in json.loads(hubfleet("plan", "--json", fleet=fleet, check=True).stdout)["hubs"]
    }
    assert plan["hackweek-staging"]["action"] == "update" and plan["hackweek"]["action"] == "update"
    history = json.loads(hubfleet("history", "hackweek-staging", "--json", fleet=fleet, check=True).stdout)
    assert history["events"][0]["kind"] in ("deployment", "check")
    # fix the staging hub: now both deploy, staging first
    edit(
        fleet / "communities/hackweek/hubs/staging.yaml",
        "  raise RuntimeError('boom from extra_config')",
        "  c.JupyterHub.shutdown_on_logout = False",
    )
    code, result = deploy(fleet)
    assert code == 0, result
    assert result["deployed"] == ["hackweek-staging", "hackweek"]


def test_removed_community_hubs_are_stopped_and_their_data_kept(fleet: Path) -> None:
    client, _ = admin_client(fleet, "hackweek")
    assert client.post("/hub/api/users/leaver").status_code == 201
    community = fleet / "communities/hackweek"
    for path in sorted(community.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    community.rmdir()

    code, result = deploy(fleet)

    assert code == 0, result
    assert sorted(result["removed"]) == ["hackweek", "hackweek-staging"]
    assert set(daemon_status(fleet)["hubs"]) == {"uni-a", "uni-a-staging"}
    kept = fleet / ".hubfleet-data/hubs/hackweek/jupyterhub.sqlite"
    assert kept.exists() and b"leaver" in kept.read_bytes()
    plan = json.loads(hubfleet("plan", "--json", fleet=fleet, check=True).stdout)
    assert {h["action"] for h in plan["hubs"]} == {"unchanged"}


def test_deploy_without_a_running_fleet_says_what_to_do(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet", keep={"communities/uni-a/hubs/staging.yaml"})
    result = hubfleet("deploy", fleet=root)
    assert result.returncode == 1
    assert "the fleet is not up" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr

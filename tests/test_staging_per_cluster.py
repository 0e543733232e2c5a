"""Staging per cluster: a cluster file's `staging_hub` gates the prod hubs of every community on it.

Validation, plan (text, JSON, github-matrix) and the rollout run against the demo fleet with real hubs (no
mocks): `hubfleet up` starts real JupyterHubs and `hubfleet deploy` deploys and checks them. The demo is
cut to three hubs: hackweek-staging (the cluster's staging hub), hackweek and uni-a (a prod hub whose
community has no staging hub of its own, so only the cluster's gates it).
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest

from fleet_helpers import copy_demo_fleet, edit, hubfleet, mark_deployed, running_fleet
from hubfleet.backends import backends_for
from hubfleet.clock import utcnow
from hubfleet.config.validate import load_fleet
from hubfleet.deploy.plan import make_plan
from hubfleet.deploy.rollout import Deployer
from hubfleet.store import open_store
from hubfleet.store.retirements import record_retirement

KEEP = {
    "communities/hackweek/hubs/staging.yaml",
    "communities/hackweek/hubs/prod.yaml",
    "communities/uni-a/hubs/prod.yaml",
}
CLUSTER = "clusters/local.yaml"
UNI_A = "communities/uni-a/hubs/prod.yaml"


def gated_fleet(dest: Path, gate: str = "hackweek-staging") -> Path:
    root = copy_demo_fleet(dest, keep=KEEP)
    path = root / CLUSTER
    path.write_text(path.read_text() + f"staging_hub: {gate}\n")
    return root


def validate(root: Path) -> str:
    result = hubfleet("validate", fleet=root)
    return result.stdout + result.stderr


# --------------------------------------------------------------------------- validation


def test_prod_hub_without_its_own_staging_hub_is_valid_behind_the_cluster_gate(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet", keep=KEEP)
    assert "prod hub 'uni-a' needs a staging hub" in validate(root)
    assert "(`staging_hub: NAME`)" in validate(root)
    (root / CLUSTER).write_text((root / CLUSTER).read_text() + "staging_hub: hackweek-staging\n")
    assert hubfleet("validate", fleet=root).returncode == 0


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        (
            "hackweek-stagin",
            "staging_hub: hub 'hackweek-stagin' does not exist; did you mean 'hackweek-staging'",
        ),
        ("hackweek", "staging_hub: hub 'hackweek' is a prod hub; name a hub with `stage: staging`"),
    ],
)
def test_cluster_staging_hub_must_be_a_staging_hub_of_the_fleet(
    tmp_path: Path, gate: str, message: str
) -> None:
    root = gated_fleet(tmp_path / "fleet", gate)
    out = validate(root)
    line = len((root / CLUSTER).read_text().splitlines())
    assert f"{CLUSTER}:{line}:1: {message}" in out, out
    assert "(it gates the prod hubs of cluster 'local')" in out


def test_cluster_staging_hub_must_run_on_that_cluster(tmp_path: Path) -> None:
    root = gated_fleet(tmp_path / "fleet")
    (root / "clusters/other.yaml").write_text("name: other\nkind: local\nstaging_hub: hackweek-staging\n")
    out = validate(root)
    assert (
        "clusters/other.yaml:3:1: staging_hub: hub 'hackweek-staging' runs on cluster 'local', not on "
        "'other'; name one of 'other'"
    ) in out, out


# --------------------------------------------------------------------------- plan


def test_plan_shows_the_cluster_gate(tmp_path: Path) -> None:
    root = gated_fleet(tmp_path / "fleet")
    mark_deployed(root)
    edit(root / UNI_A, "max_users: 100", "max_users: 150")

    plan = json.loads(hubfleet("plan", "--json", fleet=root, check=True).stdout)
    hubs = {h["name"]: h for h in plan["hubs"]}
    assert hubs["uni-a"]["cluster_gate"] == "hackweek-staging" and hubs["uni-a"]["action"] == "update"
    assert "cluster_gate" not in hubs["hackweek-staging"]
    assert plan["cluster_gates"] == {"hackweek-staging": ["uni-a"]}
    assert plan["waves"] == [[], ["uni-a"]]  # the gate is unchanged: checked, not deployed

    text = hubfleet("plan", "--no-diff", fleet=root, check=True).stdout
    assert "gated by hackweek-staging, the staging hub of cluster local" in text

    matrix = hubfleet("plan", "--format", "github-matrix", fleet=root, check=True).stdout.splitlines()
    values = dict(line.split("=", 1) for line in matrix)
    assert json.loads(values["prod"])["include"] == [
        {
            "hub": "uni-a",
            "community": "uni-a",
            "cluster": "local",
            "action": "update",
            "cluster_gate": "hackweek-staging",
        }
    ]


def test_narrowed_plan_deploys_a_changed_gate_first(tmp_path: Path) -> None:
    """`--hub uni-a` alone would change a prod hub before its changed gate: the gate joins the plan."""
    root = gated_fleet(tmp_path / "fleet")
    mark_deployed(root)
    edit(root / UNI_A, "max_users: 100", "max_users: 150")
    edit(root / "communities/hackweek/hubs/staging.yaml", "timeout: 1800", "timeout: 2400")
    plan = json.loads(hubfleet("plan", "--json", "--hub", "uni-a", fleet=root, check=True).stdout)
    assert plan["waves"] == [["hackweek-staging"], ["uni-a"]]
    gate = next(h for h in plan["hubs"] if h["name"] == "hackweek-staging")
    assert gate["reasons"] == [
        "staging hub of cluster local, deployed before its prod hubs: its configuration changed"
    ]


def test_retired_gate_is_named_in_the_plan(tmp_path: Path) -> None:
    root = gated_fleet(tmp_path / "fleet")
    mark_deployed(root)
    edit(root / UNI_A, "max_users: 100", "max_users: 150")
    now = utcnow()
    with open_store(root / ".hubfleet") as store:
        record_retirement(
            store,
            "hackweek-staging",
            "c",
            retired_at=now,
            purge_after=now + timedelta(days=90),
            archive_dir="/a",
            snapshot_id=None,
        )
    plan = json.loads(hubfleet("plan", "--json", fleet=root, check=True).stdout)
    uni_a = next(h for h in plan["hubs"] if h["name"] == "uni-a")
    assert uni_a["reasons"][-1] == (
        "its cluster's staging hub hackweek-staging is retired, so its check fails and this hub waits: name "
        "another staging hub in clusters/local.yaml"
    )


def test_unchanged_gate_that_fails_its_check_stops_the_prod_hubs(tmp_path: Path) -> None:
    """No hub runs here, so the unchanged gate's check really fails (nothing answers at its address) and the
    prod hub is never touched (it would need the daemon to be deployed)."""
    root = gated_fleet(tmp_path / "fleet")
    mark_deployed(root)
    edit(root / UNI_A, "max_users: 100", "max_users: 150")
    fleet = load_fleet(root)
    state = root / ".hubfleet"
    with open_store(state) as store:
        plan = make_plan(fleet, state, store)
        deployer = Deployer(fleet, store, backends_for(fleet, state), check_timeout=10)
        rollout = asyncio.run(deployer.run(plan))
    assert rollout.gate_checks["hackweek-staging"]
    outcome = rollout.outcomes["uni-a"]
    assert outcome.result == "skipped"
    assert outcome.message.startswith(
        "not touched: staging hub hackweek-staging of cluster local did not pass its check: check failed"
    )
    assert rollout.to_json()["gate_checks"]["hackweek-staging"].startswith("check failed")


# --------------------------------------------------------------------------- rollout on real hubs


@pytest.mark.integration
def test_rollout_waits_for_the_cluster_staging_hub(tmp_path: Path) -> None:
    root = gated_fleet(tmp_path / "fleet")
    with running_fleet(root):
        # the gate runs unchanged: it is checked, passes, and the prod hub deploys
        edit(root / UNI_A, "max_users: 100", "max_users: 150")
        result = json.loads(hubfleet("deploy", "--json", fleet=root, timeout=400).stdout)
        assert result["deployed"] == ["uni-a"] and result["gate_checks"] == {"hackweek-staging": None}

        # the gate changes and fails: rolled back, and no prod hub of the cluster is touched
        edit(
            root / "communities/hackweek/hubs/staging.yaml",
            "timeout: 1800\n",
            "timeout: 1800\nextra_config: |\n  raise RuntimeError('boom from extra_config')\n",
        )
        edit(root / UNI_A, "max_users: 150", "max_users: 160")
        deployed = hubfleet("deploy", "--json", fleet=root, timeout=400)
        assert deployed.returncode != 0
        result = json.loads(deployed.stdout)
        outcomes = {o["name"]: o for o in result["hubs"]}
        assert result["rolled_back"] == ["hackweek-staging"]
        assert result["skipped"] == ["uni-a"]
        assert outcomes["uni-a"]["message"] == (
            "not touched: staging hub hackweek-staging of cluster local failed (rolled_back)"
        )
        plan = json.loads(hubfleet("plan", "--json", fleet=root, check=True).stdout)
        assert {h["name"]: h["action"] for h in plan["hubs"]}["uni-a"] == "update"

"""`hubfleet upgrade CLUSTER --to VERSION [--resume]`: the steps run in order with the provider's commands, a
check of every hub after each, the first failure stops the run, every step is in the store and in
`hubfleet history`, and --resume continues at the first unfinished step without repeating a provider upgrade.

No Kubernetes API server or cloud account exists here: kubectl, helm, gcloud, aws and az are the stateful
fakes of tests/fake_clouds_upgrade.py on PATH (JSON shapes from the CLIs' documentation): an upgrade the fake
provider CLI performs is what the next version reading sees, across CLI processes. The hub check after a step
is what hubfleet asks of a cluster (`kubectl rollout status` of the hub and proxy, the hub's REST API through
its proxy via the API server's service proxy); the fakes answer it as a healthy hub does, or fail it for the
hubs in $FAKE_HUB_DOWN. The store is the real SQLite store; `hubfleet` runs as a real subprocess.
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import fake_clouds_upgrade as fakes
from fleet_helpers import hubfleet
from hubfleet.clusters.upgrade import cluster_lock
from hubfleet.store import open_store
from hubfleet.store.models import Maintenance, ProbeSample
from hubfleet.store.upgrades import runs

FIXTURE = Path(__file__).parent / "fixtures" / "k8s-fleet"


@pytest.fixture
def clouds(tmp_path: Path) -> dict[str, Any]:
    fleet = tmp_path / "fleet"
    shutil.copytree(FIXTURE, fleet)
    state = tmp_path / "state"
    env = fakes.install(tmp_path / "fakebin", tmp_path / "clouds.json", tmp_path / "calls.jsonl")
    env["HUBFLEET_ACTOR"] = "ada"
    return {"fleet": fleet, "env": env, "log": tmp_path / "calls.jsonl", "state": state, "tmp": tmp_path}


def upgrade(clouds: dict[str, Any], *args: str, extra_env: dict[str, str] | None = None) -> Any:
    env = clouds["env"] | (extra_env or {})
    return hubfleet("upgrade", *args, "--state-dir", str(clouds["state"]), fleet=clouds["fleet"], env=env)


def provider_calls(clouds: dict[str, Any], tool: str, verb: str) -> list[list[str]]:
    return [argv for argv in fakes.calls(clouds["log"]) if argv[0] == tool and verb in argv]


def cloud_state(clouds: dict[str, Any], cluster: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((clouds["tmp"] / "clouds.json").read_text())["clusters"][cluster]
    return data


def test_a_gke_cluster_is_upgraded_step_by_step_with_hub_checks(clouds: dict[str, Any]) -> None:
    result = upgrade(clouds, "gke", "--to", "1.34", "--json")
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)["run"]
    assert run["status"] == "done" and run["from"] == "1.32" and run["target"] == "1.34"
    assert run["actor"] == "ada via hubfleet upgrade"
    assert [(s["number"], s["description"], s["status"]) for s in run["steps"]] == [
        (1, "control plane 1.32 -> 1.33", "ok"),
        (2, "node pool user-pool 1.31 -> 1.33", "ok"),
        (3, "control plane 1.33 -> 1.34", "ok"),
        (4, "node pool default-pool 1.32 -> 1.34", "ok"),
        (5, "node pool user-pool 1.33 -> 1.34", "ok"),
    ]
    upgrades = provider_calls(clouds, "gcloud", "upgrade")
    assert [argv[4:7] for argv in upgrades] == [
        ["fleet-one", "--master", "--cluster-version"],
        ["fleet-one", "--node-pool", "user-pool"],
        ["fleet-one", "--master", "--cluster-version"],
        ["fleet-one", "--node-pool", "default-pool"],
        ["fleet-one", "--node-pool", "user-pool"],
    ]
    assert cloud_state(clouds, "gke")["control_plane"].startswith("1.34.")
    assert all(v.startswith("1.34.") for v in cloud_state(clouds, "gke")["pools"].values())
    for step in run["steps"]:
        assert {c["hub"]: c["ok"] for c in step["checks"]} == {"physics": True, "physics-staging": True}
        assert "JupyterHub 5.3.0 answers" in step["checks"][0]["detail"]
        assert step["started_at"] and step["finished_at"]
        assert step["interruption_seconds"] == {"physics": None, "physics-staging": None}  # no prober ran
        assert "$ gcloud container clusters upgrade fleet-one" in step["output"]
    # every step checked both hubs: rollout of hub and proxy, then the API through the proxy
    raw = [argv for argv in fakes.calls(clouds["log"]) if argv[0] == "kubectl" and "--raw" in argv]
    assert len(raw) == 10
    assert raw[0][-1] == "/api/v1/namespaces/physics/services/proxy-public:http/proxy/hub/api/"

    history = hubfleet("history", "gke", "--json", "--state-dir", str(clouds["state"]), fleet=clouds["fleet"])
    events = json.loads(history.stdout)["events"]
    assert [e["kind"] for e in events] == ["upgrade"] * 5
    # each step was a window of planned maintenance of both hubs, closed at its end
    with open_store(clouds["state"]) as store, store.session() as session:
        windows = session.scalars(select(Maintenance).order_by(Maintenance.id)).all()
        assert [(w.hub, w.reason) for w in windows[:2]] == [
            ("physics", "upgrade of cluster gke to 1.34, step 1: control plane 1.32 -> 1.33"),
            ("physics-staging", "upgrade of cluster gke to 1.34, step 1: control plane 1.32 -> 1.33"),
        ]
        assert len(windows) == 10 and all(w.finished_at is not None for w in windows)
        assert windows[0].actor == "ada via hubfleet upgrade"
    assert events[0]["summary"] == "upgrade step 5 (run 1): node pool user-pool 1.33 -> 1.34: ok"
    assert events[-1]["details"]["commands"][0][:4] == ["gcloud", "container", "clusters", "upgrade"]


def test_a_failed_eks_step_stops_the_run_and_resume_continues_it(clouds: dict[str, Any]) -> None:
    """EKS refuses (as the real API does) and the run stops at that step; the next run without --resume is
    refused; --resume continues at the failed step and never repeats the node-group step that succeeded."""
    failing = {"FAKE_FAIL": "update-cluster-version --name fleet-two --kubernetes-version 1.33"}
    first = upgrade(clouds, "eks", "--to", "1.33", extra_env=failing)
    assert first.returncode == 1
    assert (
        "upgrade of eks to 1.33 stopped at step 2 (control plane 1.32 -> 1.33): "
        "`aws eks update-cluster-version --name fleet-two --kubernetes-version 1.33 --region us-west-2` "
        "failed (exit 1)"
    ) in first.stderr
    assert "continue with `hubfleet upgrade eks --to 1.33 --resume`" in first.stderr
    assert "Traceback" not in first.stderr
    with open_store(clouds["state"]) as store:
        (run,) = runs(store, "eks")
        assert run.status == "failed"
        assert [s.status for s in run.steps] == ["ok", "failed", "pending", "pending"]
        failed = run.steps[1]
        assert "quota exceeded" in failed.output and "quota exceeded" in failed.message
    assert cloud_state(clouds, "eks")["control_plane"].startswith("1.32.")

    again = upgrade(clouds, "eks", "--to", "1.33")
    assert again.returncode == 1
    assert "upgrade run #1 of cluster 'eks' to 1.33 stopped at step 2" in again.stderr
    assert "--resume" in again.stderr
    wrong = upgrade(clouds, "eks", "--to", "1.34", "--resume")
    assert wrong.returncode == 1 and "goes to 1.33, not 1.34" in wrong.stderr

    nodegroup_calls = len(provider_calls(clouds, "aws", "update-nodegroup-version"))
    resumed = upgrade(clouds, "eks", "--to", "1.33", "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    run_data = json.loads(resumed.stdout)["run"]
    assert run_data["status"] == "done" and [s["status"] for s in run_data["steps"]] == ["ok"] * 4
    new_calls = provider_calls(clouds, "aws", "update-nodegroup-version")[nodegroup_calls:]
    assert [argv[argv.index("--nodegroup-name") + 1] for argv in new_calls] == ["core", "users"]  # steps 3, 4
    assert cloud_state(clouds, "eks")["control_plane"].startswith("1.33.")
    nothing = upgrade(clouds, "eks", "--resume")
    assert nothing.returncode == 1 and "no unfinished upgrade of cluster 'eks' to resume" in nothing.stderr


def test_a_hub_failing_its_check_stops_the_run_and_resume_does_not_repeat_the_provider_upgrade(
    clouds: dict[str, Any],
) -> None:
    first = upgrade(clouds, "aks", "--to", "1.34", extra_env={"FAKE_HUB_DOWN": "chem-staging"})
    assert first.returncode == 1
    assert (
        "stopped at step 1 (control plane 1.33 -> 1.34): hub check failed after the step: chem-staging: "
        in (first.stderr)
    )
    assert "the hub's API did not answer through its proxy" in first.stderr
    assert cloud_state(clouds, "aks")["control_plane"].startswith("1.34")  # the provider's part was done
    assert len(provider_calls(clouds, "az", "upgrade")) == 1

    resumed = upgrade(clouds, "aks", "--to", "1.34", "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    steps = json.loads(resumed.stdout)["run"]["steps"]
    assert "already at 1.34 before the step: its commands were not run again" in steps[0]["output"]
    control_plane_upgrades = [
        a for a in provider_calls(clouds, "az", "upgrade") if "--control-plane-only" in a
    ]
    assert len(control_plane_upgrades) == 1
    assert [s["status"] for s in steps] == ["ok", "ok", "ok"]


def test_the_probers_failures_during_a_step_are_that_hubs_interruption(clouds: dict[str, Any]) -> None:
    """Probe samples as the daemon's prober writes them, inside the windows the run recorded: a failed probe
    counts until the next probe of the hub."""
    assert upgrade(clouds, "gke", "--to", "1.33").returncode == 0
    with open_store(clouds["state"]) as store:
        (run,) = runs(store, "gke")
        step = run.steps[1]  # the node pool: user servers restarted
        assert step.started_at is not None and step.finished_at is not None
        span = step.finished_at - step.started_at
        fail_at, back_at = step.started_at + span * 0.2, step.started_at + span * 0.7
        with store.session() as session, session.begin():
            session.add(ProbeSample(hub="physics", at=fail_at, ok=False, error="503"))
            session.add(ProbeSample(hub="physics", at=back_at, ok=True))
            session.add(ProbeSample(hub="physics-staging", at=fail_at, ok=True))
            session.add(ProbeSample(hub="physics", at=step.started_at - timedelta(minutes=5), ok=False))
        expected = round((back_at - fail_at).total_seconds(), 1)
    history = hubfleet("history", "gke", "--json", "--state-dir", str(clouds["state"]), fleet=clouds["fleet"])
    events = {e["details"]["number"]: e for e in json.loads(history.stdout)["events"]}
    assert events[2]["details"]["interruption_seconds"] == {"physics": expected, "physics-staging": 0.0}
    assert f"probes failed: physics {expected:g}s" in events[2]["summary"]
    assert events[1]["details"]["interruption_seconds"] == {"physics": None, "physics-staging": None}


def test_a_kubeconfig_cluster_and_bad_arguments_are_refused(clouds: dict[str, Any]) -> None:
    kube = upgrade(clouds, "kube", "--to", "1.31")
    assert kube.returncode == 1 and "hubfleet has no provider command to upgrade it" in kube.stderr
    no_target = upgrade(clouds, "gke")
    assert no_target.returncode != 0 and "--to" in no_target.stderr
    assert provider_calls(clouds, "gcloud", "upgrade") == []


def test_one_upgrade_of_a_cluster_at_a_time(clouds: dict[str, Any]) -> None:
    """While another `hubfleet upgrade gke` holds the cluster's lock (here this test process, as a second
    process would), a new run or a --resume is refused before anything runs."""
    clouds["state"].mkdir(parents=True)
    with cluster_lock(clouds["state"], "gke"):
        busy = upgrade(clouds, "gke", "--to", "1.33")
        assert busy.returncode == 1
        assert "another `hubfleet upgrade gke` is running from this state directory" in busy.stderr
        assert upgrade(clouds, "eks", "--to", "1.33").returncode == 0  # other clusters are not held
    assert provider_calls(clouds, "gcloud", "upgrade") == []
    assert upgrade(clouds, "gke", "--to", "1.33").returncode == 0

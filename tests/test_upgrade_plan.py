"""Upgrade plans: the version-skew policy per provider, the shipped removed-API table, the scan of hubs'
manifests rendered by the real helm with the real z2jh chart, and `hubfleet upgrade-plan` end to end.

No Kubernetes API server or cloud account exists here: kubectl, gcloud, aws and az are the fakes of
tests/fake_clouds_upgrade.py on PATH (JSON shapes from the CLIs' documentation, see that module), while
`helm template` is the real helm (.cache/helm/helm) with ../shared/charts/jupyterhub-4.4.0.tgz. The fleet is
tests/fixtures/k8s-fleet: EKS at 1.32 (its standard support ended 2026-03-23: past it on 2026-11-30, in paid
extended support), GKE at 1.32, AKS at 1.33. `hubfleet upgrade-plan` runs as a real subprocess.
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import fake_clouds_upgrade as fakes
from fleet_helpers import hubfleet
from hubfleet.clock import utcnow
from hubfleet.clusters.removed_apis import load_removed_apis, manifest_objects, scan
from hubfleet.clusters.skew import MAX_NODE_SKEW, check_steps, skew_steps
from hubfleet.config.validate import load_fleet
from hubfleet.render.chart_check import ChartCheckError, helm_template
from hubfleet.render.kubernetes import secret_placeholders, to_yaml, values_yaml
from hubfleet.settings import UserError

FIXTURE = Path(__file__).parent / "fixtures" / "k8s-fleet"
CHART = fakes.CHARTS / "jupyterhub-4.4.0.tgz"

needs_helm = pytest.mark.skipif(
    not fakes.REAL_HELM.exists() or not CHART.exists(),
    reason="needs .cache/helm/helm (scripts/install-helm.sh) and ../shared/charts/jupyterhub-4.4.0.tgz",
)


@pytest.fixture
def clouds(tmp_path: Path) -> dict[str, Any]:
    """A copy of the k8s-fleet fixture and the fake CLIs; the env a `hubfleet` subprocess needs."""
    fleet = tmp_path / "fleet"
    shutil.copytree(FIXTURE, fleet)
    env = fakes.install(tmp_path / "fakebin", tmp_path / "state.json", tmp_path / "calls.jsonl")
    return {"fleet": fleet, "env": env, "log": tmp_path / "calls.jsonl", "tmp": tmp_path}


def plan_json(clouds: dict[str, Any], *args: str) -> dict[str, Any]:
    result = hubfleet("upgrade-plan", *args, "--json", fleet=clouds["fleet"], env=clouds["env"])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --------------------------------------------------------------------------- the skew policy


@pytest.mark.parametrize(
    ("provider", "control_plane", "pools", "target", "expected"),
    [
        # EKS: every node group must run the cluster's version before the control plane moves
        (
            "aws", "1.29", {"a": "1.29", "b": "1.28"}, "1.31",
            ["b 1.28->1.29", "cp 1.29->1.30", "a 1.29->1.30", "b 1.29->1.30", "cp 1.30->1.31",
             "a 1.30->1.31", "b 1.30->1.31"],
        ),
        # GKE: node pools at most two minors behind; a pool is moved only when the next step would break that
        (
            "gcp", "1.30", {"default": "1.28"}, "1.33",
            ["default 1.28->1.30", "cp 1.30->1.31", "cp 1.31->1.32", "default 1.30->1.32", "cp 1.32->1.33",
             "default 1.32->1.33"],
        ),
        # AKS: two minors as well
        ("azure", "1.31", {"sys": "1.31", "user": "1.30"}, "1.33",
         ["cp 1.31->1.32", "user 1.30->1.32", "cp 1.32->1.33", "sys 1.31->1.33", "user 1.32->1.33"]),
        # plain Kubernetes: three minors
        ("kubeconfig", "1.28", {"p": "1.26"}, "1.31", ["cp 1.28->1.29", "p 1.26->1.29", "cp 1.29->1.30",
                                                      "cp 1.30->1.31", "p 1.29->1.31"]),
        ("gcp", "1.33", {"p": "1.33"}, "1.33", []),
    ],
)  # fmt: skip
def test_skew_steps_per_provider(
    provider: str, control_plane: str, pools: dict[str, str], target: str, expected: list[str]
) -> None:
    steps = skew_steps(control_plane, pools, target, max_node_skew=MAX_NODE_SKEW[provider])
    shown = [f"{'cp' if s.kind == 'control_plane' else s.pool} {s.from_version}->{s.version}" for s in steps]
    assert shown == expected
    check_steps(control_plane, pools, steps, MAX_NODE_SKEW[provider])  # the policy holds after every step


def test_a_long_way_holds_the_policy_at_every_step() -> None:
    for provider, skew in MAX_NODE_SKEW.items():
        pools = {"old": "1.24", "mid": "1.27", "new": "1.28"}
        steps = skew_steps("1.28", pools, "1.35", max_node_skew=skew)
        check_steps("1.28", pools, steps, skew)
        control = [s for s in steps if s.kind == "control_plane"]
        assert [s.version for s in control] == [f"1.{m}" for m in range(29, 36)], provider
        assert {s.pool: s.version for s in steps if s.kind == "node_pool"} == {
            "old": "1.35", "mid": "1.35", "new": "1.35"
        }  # fmt: skip


@pytest.mark.parametrize(
    ("control_plane", "pools", "target", "message"),
    [
        ("1.31", {}, "1.30", "cannot be downgraded"),
        ("1.31", {"p": "1.32"}, "1.31", "node pool p runs 1.32, newer than the target 1.31"),
        ("1.31", {}, "2.0", "across major versions"),
        ("1.31", {}, "latest", "'latest' is not a Kubernetes version"),
    ],
)
def test_bad_targets_say_what_is_wrong(
    control_plane: str, pools: dict[str, str], target: str, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        skew_steps(control_plane, pools, target)


# --------------------------------------------------------------------------- the removed-API table


def test_the_shipped_table_holds_the_guides_removals() -> None:
    table = load_removed_apis()
    releases = {entry.removed_in for entry in table.entries}
    assert {"1.16", "1.22", "1.25", "1.26", "1.27", "1.29", "1.32"} <= releases
    pairs = {(e.api_version, e.kind, e.removed_in) for e in table.entries}
    for expected in [
        ("extensions/v1beta1", "Deployment", "1.16"),
        ("networking.k8s.io/v1beta1", "Ingress", "1.22"),
        ("rbac.authorization.k8s.io/v1beta1", "RoleBinding", "1.22"),
        ("policy/v1beta1", "PodDisruptionBudget", "1.25"),
        ("policy/v1beta1", "PodSecurityPolicy", "1.25"),
        ("batch/v1beta1", "CronJob", "1.25"),
        ("autoscaling/v2beta2", "HorizontalPodAutoscaler", "1.26"),
        ("storage.k8s.io/v1beta1", "CSIStorageCapacity", "1.27"),
        ("flowcontrol.apiserver.k8s.io/v1beta3", "FlowSchema", "1.32"),
    ]:
        assert expected in pairs
    crossed = {(e.api_version, e.kind) for e in table.removed_between("1.24", "1.26")}
    assert ("policy/v1beta1", "PodDisruptionBudget") in crossed  # removed in 1.25: crossed
    assert ("networking.k8s.io/v1beta1", "Ingress") not in crossed  # removed in 1.22: before the start
    assert ("storage.k8s.io/v1beta1", "CSIStorageCapacity") not in crossed  # 1.27: beyond the target


def test_a_broken_table_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "removed.yaml"
    path.write_text("compiled: 2026-11-30\nremoved:\n  '1.25':\n    - {kinds: [Job]}\n")
    with pytest.raises(UserError, match=r"removed.yaml: release 1.25 entry 1 needs api_version and kinds"):
        load_removed_apis(path)


@needs_helm
def test_scan_of_a_hub_rendered_by_the_real_chart(tmp_path: Path) -> None:
    """The chart 4.4.0 uses only current API versions; an object appended to its output with a removed one
    (policy/v1beta1 PodDisruptionBudget, as older charts rendered) is found, with where it came from."""
    fleet = load_fleet(FIXTURE)
    hub = fleet.hubs["physics"]
    values, placeholders = tmp_path / "values.yaml", tmp_path / "placeholders.yaml"
    values.write_text(values_yaml(fleet, hub))
    placeholders.write_text(to_yaml(secret_placeholders(fleet, hub)))
    rendered = helm_template(
        CHART,
        [values, placeholders],
        release="physics",
        namespace="physics",
        kube_version="1.33.0",
        helm=fakes.REAL_HELM,
    )
    objects = manifest_objects(rendered)
    kinds = {(o.api_version, o.kind) for o in objects}
    assert ("policy/v1", "PodDisruptionBudget") in kinds and ("apps/v1", "Deployment") in kinds
    table = load_removed_apis()
    assert scan(objects, table.removed_between("1.20", "1.33")) == []
    old = (
        "---\n# Source: jupyterhub/templates/hub/pdb.yaml\napiVersion: policy/v1beta1\n"
        "kind: PodDisruptionBudget\nmetadata:\n  name: hub\nspec:\n  maxUnavailable: 1\n"
    )
    found = scan(manifest_objects(rendered + old), table.removed_between("1.24", "1.33"))
    assert [f.describe() for f in found] == [
        "PodDisruptionBudget hub uses policy/v1beta1, removed in 1.25; use policy/v1 "
        "(jupyterhub/templates/hub/pdb.yaml)"
    ]
    assert scan(manifest_objects(rendered + old), table.removed_between("1.25", "1.33")) == []


@needs_helm
def test_helm_refuses_a_kubernetes_version_below_the_charts_kube_version(tmp_path: Path) -> None:
    """What the scan says for a target below the chart's kubeVersion (>=1.28.0-0): helm's own refusal."""
    fleet = load_fleet(FIXTURE)
    values = tmp_path / "values.yaml"
    values.write_text(values_yaml(fleet, fleet.hubs["physics"]))
    with pytest.raises(ChartCheckError, match="kubeVersion"):
        helm_template(
            CHART,
            [values],
            release="physics",
            namespace="physics",
            kube_version="1.27.0",
            helm=fakes.REAL_HELM,
        )


# --------------------------------------------------------------------------- hubfleet upgrade-plan


@needs_helm
def test_upgrade_plan_for_an_eks_a_gke_and_an_aks_cluster(clouds: dict[str, Any]) -> None:
    data = plan_json(
        clouds, "--to", "1.34", "--charts", str(fakes.CHARTS), "--window", "Sat 5 Dec 08:00-12:00 UTC"
    )
    plans = {p["cluster"]: p for p in data["plans"]}
    assert set(plans) == {"eks", "gke", "aks", "kube"}

    eks = plans["eks"]
    assert eks["current"] == {"control_plane": "1.32", "node_pools": {"core": "1.32", "users": "1.31"}}
    assert eks["crossed"] == ["1.33", "1.34"]
    assert [s["description"] for s in eks["steps"]] == [
        "node pool users 1.31 -> 1.32",  # EKS: node groups at the cluster's version first
        "control plane 1.32 -> 1.33",
        "node pool core 1.32 -> 1.33",
        "node pool users 1.32 -> 1.33",
        "control plane 1.33 -> 1.34",
        "node pool core 1.33 -> 1.34",
        "node pool users 1.33 -> 1.34",
    ]
    assert eks["steps"][1]["commands"] == [
        ["aws", "eks", "update-cluster-version", "--name", "fleet-two", "--kubernetes-version", "1.33",
         "--region", "us-west-2"],
        ["aws", "eks", "wait", "cluster-active", "--name", "fleet-two", "--region", "us-west-2"],
    ]  # fmt: skip
    assert eks["steps"][0]["commands"][0] == [
        "aws", "eks", "update-nodegroup-version", "--cluster-name", "fleet-two", "--nodegroup-name", "users",
        "--kubernetes-version", "1.32", "--region", "us-west-2",
    ]  # fmt: skip
    assert eks["chart"] == {"current": "4.4.0", "supports_target": True, "recommended": "4.4.0",
                            "table_compiled": "2026-11-30"}  # fmt: skip
    scans = {s["hub"]: s for s in eks["scans"]}
    assert set(scans) == {"astro", "astro-staging", "bio", "bio-staging"}
    assert all(s["scanned"] and s["objects"] > 20 and s["findings"] == [] for s in scans.values())
    assert eks["blocked"] == []
    notices = {n["community"]: n for n in eks["notices"]}
    assert notices["astro"]["contacts"] == ["Vera Rubin <vera@astro.example.org>"]
    assert notices["astro"]["hubs"] == ["astro", "astro-staging"]
    text = notices["astro"]["text"]
    assert "Window: Sat 5 Dec 08:00-12:00 UTC." in text and "1.32 to 1.34" in text
    assert "no restart of user servers" in text and "every user server on the pool is stopped" in text
    assert "lists no contacts" in notices["bio"]["text"]

    gke = plans["gke"]
    assert [s["description"] for s in gke["steps"]] == [
        "control plane 1.32 -> 1.33",
        "node pool user-pool 1.31 -> 1.33",  # two minors behind 1.34 would be three: moved first
        "control plane 1.33 -> 1.34",
        "node pool default-pool 1.32 -> 1.34",
        "node pool user-pool 1.33 -> 1.34",
    ]
    assert gke["steps"][0]["commands"] == [
        ["gcloud", "container", "clusters", "upgrade", "fleet-one", "--master", "--cluster-version", "1.33",
         "--zone", "europe-west1-b", "--project", "hubfleet-demo", "--quiet"]
    ]  # fmt: skip
    assert gke["steps"][1]["commands"][0][5:7] == ["--node-pool", "user-pool"]

    aks = plans["aks"]
    assert aks["steps"][0]["commands"] == [
        ["az", "aks", "upgrade", "--resource-group", "hubfleet-rg", "--name", "fleet-three",
         "--kubernetes-version", "1.34", "--control-plane-only", "--yes"]
    ]  # fmt: skip
    assert aks["steps"][1]["commands"] == [
        ["az", "aks", "nodepool", "upgrade", "--resource-group", "hubfleet-rg", "--cluster-name",
         "fleet-three", "--name", "system", "--kubernetes-version", "1.34", "--yes"]
    ]  # fmt: skip
    (chem,) = aks["scans"]
    assert not chem["scanned"] and "jupyterhub-4.3.5.tgz is not in" in chem["note"]  # never silence

    kube = plans["kube"]
    assert all(s["commands"] == [] for s in kube["steps"])
    assert any("kubeconfig file" in w for w in kube["warnings"])


@needs_helm
def test_a_removed_api_in_the_rendered_manifests_blocks_the_plan_and_the_upgrade(
    clouds: dict[str, Any],
) -> None:
    """With a table (given by --removed-apis, as an operator would for a newer guide) in which policy/v1
    PodDisruptionBudget is removed in 1.34, the real chart's PDBs of every GKE hub are found."""
    table = clouds["tmp"] / "removed.yaml"
    table.write_text(
        "compiled: 2026-11-30\nremoved:\n  '1.34':\n"
        "    - {api_version: policy/v1, kinds: [PodDisruptionBudget], replacement: policy/v2}\n"
    )
    args = ("gke", "--to", "1.34", "--charts", str(fakes.CHARTS), "--removed-apis", str(table))
    (plan,) = plan_json(clouds, *args)["plans"]
    findings = {(s["hub"], f["name"], f["removed_in"]) for s in plan["scans"] for f in s["findings"]}
    assert findings == {
        (hub, name, "1.34")
        for hub in ("physics", "physics-staging")
        for name in ("user-placeholder", "user-scheduler")
    }  # the PDBs the chart renders by default
    assert any(
        "PodDisruptionBudget user-scheduler uses policy/v1, removed in 1.34" in b for b in plan["blocked"]
    )
    physics = next(n for n in plan["notices"] if n["community"] == "physics")
    assert "needs a change first: PodDisruptionBudget user-placeholder uses policy/v1" in physics["text"]
    (short,) = plan_json(
        clouds, "gke", "--to", "1.33", "--charts", str(fakes.CHARTS), "--removed-apis", str(table)
    )["plans"]
    assert short["blocked"] == []  # 1.34 not crossed

    refused = hubfleet("upgrade", *args, fleet=clouds["fleet"], env=clouds["env"])
    assert refused.returncode == 1
    assert "is blocked: hub physics: PodDisruptionBudget" in refused.stderr
    assert "--ignore-blockers" in refused.stderr
    assert not any(argv[1:4] == ["container", "clusters", "upgrade"] for argv in fakes.calls(clouds["log"]))


def test_the_default_target_is_the_newest_minor_in_standard_support(clouds: dict[str, Any]) -> None:
    today = utcnow().date()
    day = timedelta(days=1)
    calendar = clouds["tmp"] / "calendar.yaml"
    rows = {
        "1.32": (today - 900 * day, today - 100 * day),
        "1.33": (today - 300 * day, today + 100 * day),
        "1.34": (today - day, today + 400 * day),
        "1.35": (today + day, today + 500 * day),  # not released yet
    }
    minors = "".join(f"      '{v}': {{released: {r}, end_of_standard: {e}}}\n" for v, (r, e) in rows.items())
    calendar.write_text(
        f"compiled: {today}\nproviders:\n  gcp:\n    minors:\n{minors}  aws:\n    minors:\n{minors}"
        f"  azure:\n    minors:\n{minors}"
    )
    (plan,) = plan_json(clouds, "gke", "--calendar", str(calendar))["plans"]
    assert plan["target"] == "1.34"


def test_bad_input_is_one_clear_line(clouds: dict[str, Any]) -> None:
    for args, message in [
        (("nope", "--to", "1.33"), "no cluster named 'nope'"),
        (("gke", "--to", "one.two"), "'one.two' is not a Kubernetes version; write it as MAJOR.MINOR"),
        (("gke", "--to", "1.31"), "the control plane already runs 1.32, newer than 1.31"),
    ]:
        result = hubfleet("upgrade-plan", *args, fleet=clouds["fleet"], env=clouds["env"])
        assert result.returncode == 1, result.stdout
        assert message in result.stderr and "Traceback" not in result.stderr


@needs_helm
def test_the_charts_come_from_the_fleets_charts_dir(clouds: dict[str, Any]) -> None:
    fleet_yaml = clouds["fleet"] / "fleet.yaml"
    fleet_yaml.write_text(fleet_yaml.read_text() + f"kubernetes:\n  charts_dir: {fakes.CHARTS}\n")
    (plan,) = plan_json(clouds, "gke", "--to", "1.33")["plans"]
    assert [(s["hub"], s["scanned"]) for s in plan["scans"]] == [("physics", True), ("physics-staging", True)]
    (unscanned,) = plan_json(clouds, "aks", "--to", "1.34")["plans"]
    assert "jupyterhub-4.3.5.tgz is not in" in unscanned["scans"][0]["note"]


def test_a_chart_that_does_not_support_the_target_blocks_the_upgrade(clouds: dict[str, Any]) -> None:
    """A chart table in which 4.3.5 (the AKS cluster's chart, and what helm reports for its hub) stops at
    1.33."""
    table = clouds["tmp"] / "charts.yaml"
    table.write_text(
        "compiled: 2026-11-30\nversions:\n"
        "  4.3.5: {released: 2026-05-06, kube_version: '>=1.28.0-0 <1.34.0-0', jupyterhub: 5.4.6}\n"
        "  4.4.0: {released: 2026-06-01, kube_version: '>=1.28.0-0', jupyterhub: 5.5.0}\n"
    )
    (plan,) = plan_json(clouds, "aks", "--to", "1.34", "--chart-table", str(table))["plans"]
    assert plan["chart"]["supports_target"] is False and plan["chart"]["recommended"] == "4.4.0"
    assert plan["blocked"] == [
        "chart 4.3.5 does not support Kubernetes 1.34; move the cluster's chart_version to 4.4.0 first",
        "hub chem-staging runs chart 4.3.5 (helm list), which does not support Kubernetes 1.34: deploy it "
        "with a chart that does before the upgrade",
    ]
    result = hubfleet(
        "upgrade", "aks", "--to", "1.34", "--chart-table", str(table),
        "--state-dir", str(clouds["tmp"] / "st"), fleet=clouds["fleet"], env=clouds["env"],
    )  # fmt: skip
    assert result.returncode == 1 and "move the cluster's chart_version to 4.4.0 first" in result.stderr


def test_a_cluster_that_cannot_be_read_does_not_hide_the_others_plans(clouds: dict[str, Any]) -> None:
    env = clouds["env"] | {"FAKE_FAIL": "node-pools list"}  # GKE's node pools cannot be listed
    result = hubfleet("upgrade-plan", "--to", "1.34", "--json", fleet=clouds["fleet"], env=env)
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert sorted(p["cluster"] for p in data["plans"]) == ["aks", "eks", "kube"]
    assert set(data["errors"]) == {"gke"} and "node-pools list" in data["errors"]["gke"]
    assert "error:" in result.stderr and "Traceback" not in result.stderr

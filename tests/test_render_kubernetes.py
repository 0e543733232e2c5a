"""Kubernetes backend: z2jh values (golden files + structure), exact helm/kubectl/cloud command lines,
credentials contexts, missing tools.

No cluster, helm or cloud CLI exists here. Where a command must run, the tests put small fake `helm`,
`kubectl`, `gcloud`, `aws` and `az` scripts on PATH that record their argv (mocking only the cluster and
helm); everything of hubfleet's runs for real. Regenerate the golden files with UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from hubfleet.backends.kube_credentials import cluster_credentials, kube_context
from hubfleet.backends.kubernetes import (
    KubernetesBackend,
    helm_rollback_command,
    helm_upgrade_command,
    rollout_commands,
)
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Z2JH_CHART_VERSION, Hub, KubernetesCluster
from hubfleet.config.validate import load_fleet
from hubfleet.render.kubernetes import render_z2jh_values, secret_values, values_yaml
from hubfleet.render.local import CONTROL_SCOPES, OPERATOR_SCOPES
from hubfleet.settings import UserError

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "k8s-fleet"
GOLDEN = HERE / "golden"
PASSWORDS = ["physics-staging-secret-pw", "chem-staging-secret-pw", "lab-staging-secret-pw"]
REPO = "https://hub.jupyter.org/helm-chart/"


@pytest.fixture(scope="module")
def fleet() -> FleetConfig:
    return load_fleet(FIXTURE)


def cluster_of(fleet: FleetConfig, hub: Hub) -> KubernetesCluster:
    cluster = fleet.cluster_of(hub)
    assert isinstance(cluster, KubernetesCluster)
    return cluster


class PlainSecrets:
    """The SecretResolver protocol for fleets with plain-text secrets (no age identity needed)."""

    def resolve(self, hub: Hub, value: Any) -> str | None:
        return None if value is None else value.get_secret_value()


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("hub_name", sorted(load_fleet(FIXTURE).hubs))
def test_values_match_golden_file(fleet: FleetConfig, hub_name: str) -> None:
    rendered = values_yaml(fleet, fleet.hubs[hub_name])
    golden = GOLDEN / f"{hub_name}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(rendered)
    assert rendered == golden.read_text(), (
        f"re-run with UPDATE_GOLDEN=1 if the change to {golden} is intended"
    )


def test_prod_hub_values_structure(fleet: FleetConfig) -> None:
    values = render_z2jh_values(fleet, fleet.hubs["physics"])
    hub = values["hub"]
    config = dict(hub["config"]["JupyterHub"])
    assert config.pop("template_vars")["hubfleet_help"] is True  # the support desk's "Get help" link
    assert config == {
        "authenticator_class": "nativeauthenticator.NativeAuthenticator",
        "active_server_limit": 300,
        # the native hub's own groups (auth.groups), for its group-limited GPU environment
        "load_groups": {"gpu-class": {"users": ["hubfleet-check", "marie", "pierre"]}},
    }
    native = hub["config"]["NativeAuthenticator"]
    assert native["admin_users"] == ["ada", "marie"]  # the community's admin plus fleet staff
    assert native["allowed_users"] == ["pierre"]
    assert native["minimum_password_length"] == 12
    assert "nativeauthenticator" in hub["extraConfig"]["hubfleet-01-native-templates"]
    assert hub["extraConfig"]["hubfleet-99-extra-config"] == "c.JupyterHub.shutdown_on_logout = True\n"
    assert hub["services"] == {
        "hubfleet": {"name": "hubfleet"},
        "hubfleet-operator": {"name": "hubfleet-operator"},
    }
    assert hub["loadRoles"]["hubfleet"] == {
        "scopes": [*CONTROL_SCOPES, "access:services!service=support"],  # to pull the support outbox
        "services": ["hubfleet"],
    }
    assert hub["loadRoles"]["hubfleet-operator"]["scopes"] == OPERATOR_SCOPES
    assert hub["service"]["annotations"]["prometheus.io/scrape"] == "true"
    assert hub["service"]["annotations"]["prometheus.io/path"] == "/hub/metrics"
    policy = hub["networkPolicy"]
    assert policy["enabled"] is True
    assert policy["ingress"][0]["ports"] == [{"port": 8081, "protocol": "TCP"}]
    assert hub["db"]["pvc"]["annotations"] == {"helm.sh/resource-policy": "keep"}

    single = values["singleuser"]
    assert single["image"] == {"name": "quay.io/jupyter/scipy-notebook", "tag": "2025-06-02"}
    assert single["memory"] == {"limit": "2G", "guarantee": "1G"}
    assert single["cpu"] == {"limit": 2.0, "guarantee": 0.5}
    assert single["defaultUrl"] == "/tree"
    assert single["storage"] == {"type": "dynamic", "capacity": "10Gi"}
    assert single["nodeSelector"] == {"hub.jupyter.org/node-purpose": "user"}
    profiles = single["profileList"]
    assert [p["slug"] for p in profiles] == ["small", "large", "gpu"]
    assert profiles[0]["default"] is True and "kubespawner_override" not in profiles[0]
    assert profiles[1]["kubespawner_override"] == {
        "mem_limit": "8G",
        "mem_guarantee": "4G",
        "cpu_limit": 4.0,
        "cpu_guarantee": 2.0,
    }
    assert profiles[2]["kubespawner_override"] == {
        "image": "quay.io/jupyter/pytorch-notebook:cuda12-2025-06-02"
    }
    # the gate limiting the GPU image to its group (test_render_environments_kubernetes.py runs it)
    assert "hubfleet-20-environments" in hub["extraConfig"]
    assert values["cull"] == {"enabled": True, "timeout": 3600, "every": 300, "maxAge": 86400}
    assert values["scheduling"]["userPlaceholder"] == {"enabled": True, "replicas": 3}
    assert values["proxy"]["service"]["type"] == "ClusterIP"
    assert values["ingress"] == {
        "enabled": True,
        "hosts": ["physics.hubs.example.org"],
        "tls": [{"hosts": ["physics.hubs.example.org"], "secretName": "physics-tls"}],
    }


def test_staging_and_extra_values(fleet: FleetConfig) -> None:
    staging = render_z2jh_values(fleet, fleet.hubs["bio-staging"])
    assert staging["hub"]["config"]["JupyterHub"]["authenticator_class"] == "dummy"
    assert staging["hub"]["config"]["DummyAuthenticator"] == {
        "admin_users": ["ada", "rosalind"],
        "allow_all": True,
    }
    assert staging["cull"] == {"enabled": False}
    assert "scheduling" not in staging  # no placeholders unless asked for
    assert "profileList" not in staging["singleuser"]
    # no start-up code but the user database's pre_spawn_hook (bio-staging has `user_database`) and the
    # support desk's service
    assert set(staging["hub"]["extraConfig"]) == {"hubfleet-03-support", "hubfleet-20-user-database"}

    bio = render_z2jh_values(fleet, fleet.hubs["bio"])
    # extra_values are deep-merged last: a key they set wins, its siblings stay
    assert bio["singleuser"]["memory"] == {"limit": "3G", "guarantee": "1G"}
    assert bio["singleuser"]["extraEnv"] == {"DATA_BUCKET": "s3://bio-data"}
    assert bio["hub"]["config"]["JupyterHub"]["shutdown_on_logout"] is True
    assert bio["hub"]["config"]["JupyterHub"]["authenticator_class"].endswith("NativeAuthenticator")
    assert bio["singleuser"]["storage"] == {"type": "none"}

    chem = render_z2jh_values(fleet, fleet.hubs["chem-staging"])
    assert chem["singleuser"]["image"]["name"] == "quay.io/jupyter/r-notebook"  # hub file over defaults
    assert chem["singleuser"]["storage"]["capacity"] == "5Gi"


def test_no_secret_in_public_values(fleet: FleetConfig) -> None:
    tokens = {"control": "control-token-value-123", "operator": "operator-token-value-456"}
    for hub in fleet.hubs.values():
        text = values_yaml(fleet, hub)
        yaml.safe_load(text)
        for secret in [*PASSWORDS, *tokens.values()]:
            assert secret not in text
        assert "apiToken" not in text and "password:" not in text
    secrets = secret_values(fleet, fleet.hubs["physics-staging"], PlainSecrets(), tokens=tokens)
    assert secrets == {
        "hub": {
            "config": {"DummyAuthenticator": {"password": "physics-staging-secret-pw"}},
            "services": {
                "hubfleet": {"apiToken": "control-token-value-123"},
                "hubfleet-operator": {"apiToken": "operator-token-value-456"},
            },
        }
    }
    # without a resolver a plain-text password is still found; without tokens they are left out
    assert secret_values(fleet, fleet.hubs["physics-staging"]) == {
        "hub": {"config": {"DummyAuthenticator": {"password": "physics-staging-secret-pw"}}}
    }
    assert secret_values(fleet, fleet.hubs["bio-staging"]) == {}  # dummy without password


def test_config_hash_covers_chart_and_secrets(fleet: FleetConfig, tmp_path: Path) -> None:
    backend = KubernetesBackend(fleet, tmp_path, PlainSecrets())
    hub = fleet.hubs["physics-staging"]
    base = backend.config_hash(hub)
    assert base == backend.config_hash(hub)
    other_pw = hub.model_copy(update={"auth": hub.auth.model_copy(update={"password": SecretStr("changed")})})
    assert backend.config_hash(other_pw) != base
    assert backend.render(other_pw) == backend.render(hub)
    new_chart = cluster_of(fleet, hub).model_copy(update={"chart_version": "9.9.9"})
    moved = FleetConfig(
        root=fleet.root,
        settings=fleet.settings,
        clusters={**fleet.clusters, "gke": new_chart},
        hubs=fleet.hubs,
    )
    assert KubernetesBackend(moved, tmp_path, PlainSecrets()).config_hash(hub) != base


# --------------------------------------------------------------------------- command lines


def test_helm_upgrade_command_per_provider(fleet: FleetConfig) -> None:
    expected_context = {
        "physics": "gke_hubfleet-demo_europe-west1-b_fleet-one",
        "bio": "arn:aws:eks:us-west-2:123456789012:cluster/fleet-two",
        "chem-staging": "fleet-three",
        "lab-staging": "research",
    }
    for name, context in expected_context.items():
        hub = fleet.hubs[name]
        cluster = cluster_of(fleet, hub)
        version = "4.3.5" if name == "chem-staging" else Z2JH_CHART_VERSION
        assert helm_upgrade_command(hub, cluster, "/t/values.yaml", "/t/secret.yaml") == [
            "helm", "upgrade", "--install", name, "jupyterhub", "--repo", REPO, "--version", version,
            "--namespace", name, "--create-namespace", "--kube-context", context,
            "-f", "/t/values.yaml", "-f", "/t/secret.yaml",
        ]  # fmt: skip
        kubectl = ["kubectl", "--context", context, "-n", name, "rollout", "status"]
        assert rollout_commands(hub, cluster) == [
            [*kubectl, "deployment/hub", "--timeout=300s"],
            [*kubectl, "deployment/proxy", "--timeout=300s"],
        ]
        assert helm_rollback_command(hub, cluster, 4) == [
            "helm", "rollback", name, "4", "--namespace", name, "--kube-context", context,
        ]  # fmt: skip


def test_pinned_chart_and_oci_repo(fleet: FleetConfig) -> None:
    assert Z2JH_CHART_VERSION == "4.4.0"
    hub = fleet.hubs["physics"]
    cluster = cluster_of(fleet, hub).model_copy(update={"chart_repo": "oci://registry.example.org/charts/"})
    argv = helm_upgrade_command(hub, cluster, "v.yaml", None, context=None)
    assert argv == [
        "helm", "upgrade", "--install", "physics", "oci://registry.example.org/charts/jupyterhub",
        "--version", "4.4.0", "--namespace", "physics", "--create-namespace", "-f", "v.yaml",
    ]  # fmt: skip


# --------------------------------------------------------------------------- fake tools on PATH

FAKE_TOOL = r"""#!{python}
# Fake {name}: records its argv (and the values files helm was given) in $FAKE_LOG; no cluster involved.
import json, os, sys
argv = sys.argv[1:]
entry = {{"argv": ["{name}", *argv], "KUBECONFIG": os.environ.get("KUBECONFIG")}}
if "{name}" == "helm" and argv[:1] == ["upgrade"]:
    files = [argv[i + 1] for i, a in enumerate(argv) if a == "-f"]
    entry["files"] = {{f: {{"text": open(f).read(), "mode": oct(os.stat(f).st_mode & 0o777)}} for f in files}}
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(entry) + "\n")
fail = os.environ.get("FAKE_FAIL", "")
if fail and fail in " ".join(["{name}", *argv]):
    print("Error: something went wrong", file=sys.stderr)
    sys.exit(1)
if "{name}" == "helm" and argv[:1] == ["status"]:
    print(json.dumps({{"name": argv[1], "version": int(os.environ.get("FAKE_REVISION", "3"))}}))
elif "{name}" == "helm" and argv[:1] == ["upgrade"]:
    print("Release has been upgraded. Happy Helming!\nREVISION: 4")
elif "{name}" == "aws" and argv[:2] == ["sts", "get-caller-identity"]:
    print(os.environ.get("FAKE_AWS_ACCOUNT", "123456789012"))
elif "{name}" in ("gcloud", "aws"):
    open(os.environ["KUBECONFIG"], "w").write("apiVersion: v1\n")
elif "{name}" == "az":
    open(argv[argv.index("--file") + 1], "w").write("apiVersion: v1\n")
"""


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """PATH holding only fake helm/kubectl/gcloud/aws/az; returns a reader of the calls they recorded."""
    import sys

    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for name in ("helm", "kubectl", "gcloud", "aws", "az"):
        path = bin_dir / name
        path.write_text(FAKE_TOOL.format(python=sys.executable, name=name))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_LOG", str(log))

    def calls() -> list[dict[str, Any]]:
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    calls.bin_dir = bin_dir  # type: ignore[attr-defined]
    return calls


def test_apply_runs_exact_commands_and_deletes_secret_file(
    fleet: FleetConfig, tmp_path: Path, fake_tools
) -> None:
    """Mocked cluster and helm: fake helm/kubectl/gcloud record their calls."""
    backend = KubernetesBackend(fleet, tmp_path / "state", PlainSecrets())
    hub = fleet.hubs["physics-staging"]
    result = asyncio.run(backend.apply(hub))
    assert result.ok, result
    calls = fake_tools()
    ctx = "gke_hubfleet-demo_europe-west1-b_fleet-one"
    argvs = [c["argv"] for c in calls]
    upgrade = argvs[2]
    values_path, secret_path = upgrade[-3], upgrade[-1]
    assert argvs == [
        ["gcloud", "container", "clusters", "get-credentials", "fleet-one",
         "--zone", "europe-west1-b", "--project", "hubfleet-demo"],
        ["helm", "status", "physics-staging", "--namespace", "physics-staging",
         "--kube-context", ctx, "-o", "json"],
        helm_upgrade_command(hub, cluster_of(fleet, hub), values_path, secret_path),
        *rollout_commands(hub, cluster_of(fleet, hub)),
    ]  # fmt: skip
    kubeconfig = calls[0]["KUBECONFIG"]
    assert all(c["KUBECONFIG"] == kubeconfig for c in calls)  # every tool saw the temporary kubeconfig
    assert not Path(kubeconfig).exists()  # and it is gone
    files = calls[2]["files"]
    assert files[secret_path]["mode"] == "0o600"
    token = json.loads((tmp_path / "state/hubs/physics-staging/tokens.json").read_text())["control"]
    assert "physics-staging-secret-pw" in files[secret_path]["text"] and token in files[secret_path]["text"]
    assert (
        "physics-staging-secret-pw" not in files[values_path]["text"]
        and token not in files[values_path]["text"]
    )
    assert files[values_path]["text"] == backend.render(hub)
    assert not Path(secret_path).exists() and not Path(values_path).exists()
    assert "KUBECONFIG" not in os.environ or os.environ["KUBECONFIG"] != kubeconfig

    endpoint = backend.endpoint("physics-staging")
    assert endpoint.url == "https://physics-staging.hubs.example.org" and endpoint.token == token

    # rollback returns to the revision helm status reported before the apply
    result = asyncio.run(backend.rollback(hub))
    assert result.ok and "revision 3" in result.message
    assert fake_tools()[len(calls) + 1]["argv"] == helm_rollback_command(hub, cluster_of(fleet, hub), 3)


def test_failed_upgrade_reports_helm_output_without_secrets(
    fleet: FleetConfig, tmp_path: Path, fake_tools, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mocked helm fails the upgrade."""
    monkeypatch.setenv("FAKE_FAIL", "helm upgrade")
    hub = fleet.hubs["lab-staging"]
    result = asyncio.run(KubernetesBackend(fleet, tmp_path / "state", PlainSecrets()).apply(hub))
    assert not result.ok
    assert result.message == "helm upgrade failed (exit 1)"
    assert result.log_tail[0].startswith("$ helm upgrade --install lab-staging jupyterhub")
    assert "Error: something went wrong" in result.log_tail
    assert not any("lab-staging-secret-pw" in line for line in result.log_tail)
    # the kubeconfig provider uses the fleet's file, no provider CLI
    assert [c["argv"][0] for c in fake_tools()] == ["helm", "helm"]
    assert fake_tools()[0]["KUBECONFIG"] == str(FIXTURE / "kubeconfig.yaml")


def test_missing_binaries_say_what_to_install(
    fleet: FleetConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing installed
    backend = KubernetesBackend(fleet, tmp_path / "state", PlainSecrets())
    with pytest.raises(UserError) as exc:
        asyncio.run(backend.apply(fleet.hubs["physics"]))
    assert str(exc.value) == (
        "helm not found on PATH: install Helm 3: https://helm.sh/docs/intro/install/; "
        "kubectl not found on PATH: install kubectl: https://kubernetes.io/docs/tasks/tools/"
    )


def test_missing_provider_cli(fleet: FleetConfig, tmp_path: Path, fake_tools) -> None:
    (fake_tools.bin_dir / "az").unlink()
    with pytest.raises(UserError, match=r"^az not found on PATH: install the Azure CLI: https://"):
        asyncio.run(KubernetesBackend(fleet, tmp_path, PlainSecrets()).apply(fleet.hubs["chem-staging"]))


# --------------------------------------------------------------------------- credentials


async def _enter(cluster: KubernetesCluster, root: Path) -> tuple[str | None, str | None, bool]:
    async with cluster_credentials(cluster, root) as access:
        inside = os.environ.get("KUBECONFIG")
        assert inside == str(access.kubeconfig)
        return inside, access.context, access.kubeconfig.exists()


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("gke", ["gcloud", "container", "clusters", "get-credentials", "fleet-one",
                 "--zone", "europe-west1-b", "--project", "hubfleet-demo"]),
        ("eks", ["aws", "eks", "update-kubeconfig", "--name", "fleet-two", "--region", "us-west-2"]),
        ("aks", ["az", "aks", "get-credentials", "--resource-group", "hubfleet-rg", "--name", "fleet-three",
                 "--file", "{kubeconfig}"]),
    ],
)  # fmt: skip
@pytest.mark.parametrize("before", [None, "/somewhere/kubeconfig"])
def test_cloud_credentials_restore_environment(
    fleet: FleetConfig,
    fake_tools,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    command: list[str],
    before: str | None,
) -> None:
    """Mocked provider CLIs write a kubeconfig; the context restores KUBECONFIG and deletes the file."""
    if before is None:
        monkeypatch.delenv("KUBECONFIG", raising=False)
    else:
        monkeypatch.setenv("KUBECONFIG", before)
    cluster = fleet.clusters[name]
    inside, context, existed = asyncio.run(_enter(cluster, FIXTURE))
    assert existed and context == kube_context(cluster)
    assert os.environ.get("KUBECONFIG") == before
    assert not Path(inside).exists()
    argvs = [c["argv"] for c in fake_tools()]
    if name == "eks":
        assert argvs[0] == ["aws", "sts", "get-caller-identity", "--query", "Account", "--output", "text"]
        argvs = argvs[1:]
    assert argvs == [[a.format(kubeconfig=inside) for a in command]]


def test_aws_wrong_account_says_how_to_switch(
    fleet: FleetConfig, fake_tools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AWS_ACCOUNT", "999999999999")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    with pytest.raises(UserError) as exc:
        asyncio.run(_enter(fleet.clusters["eks"], FIXTURE))
    assert "logged in to account 999999999999" in str(exc.value)
    assert "cluster 'fleet-two' is in account 123456789012" in str(exc.value)
    assert "AWS_PROFILE" in str(exc.value)
    assert "KUBECONFIG" not in os.environ


def test_failed_login_says_what_to_run(
    fleet: FleetConfig, fake_tools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL", "get-credentials")
    with pytest.raises(
        UserError, match=r"failed: Error: something went wrong; log in with `gcloud auth login`"
    ):
        asyncio.run(_enter(fleet.clusters["gke"], FIXTURE))


def test_kubeconfig_credentials(fleet: FleetConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/before")
    inside, context, _ = asyncio.run(_enter(fleet.clusters["kube"], FIXTURE))
    assert (inside, context) == (str(FIXTURE / "kubeconfig.yaml"), "research")
    assert os.environ["KUBECONFIG"] == "/before"
    with pytest.raises(UserError, match=r"kubeconfig .*kubeconfig.yaml not found; create it"):
        asyncio.run(_enter(fleet.clusters["kube"], tmp_path))

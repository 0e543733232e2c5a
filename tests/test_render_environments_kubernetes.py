"""Environments on Kubernetes hubs: KubeSpawner's profile list in the z2jh values, the real chart's `helm
template`, and the gate the values put into `hub.extraConfig`.

The gate is exercised for real as far as this machine allows: its extraConfig code is executed in a traitlets
Config laid out as z2jh's jupyterhub_config.py leaves it (`c.KubeSpawner.profile_list` from
`singleuser.profileList`, the chart's user-pod tolerations), and a real KubeSpawner 7.1.0 is built from that
Config: the profile list callable, the pre-spawn hook and KubeSpawner's own `load_user_options` run unchanged.
A Kubernetes cluster cannot run here, so the spawner is built with KubeSpawner's `_mock` flag and a kubeconfig
naming an address nothing listens on (never contacted: no pod is started), and the JupyterHub user is a
stand-in carrying a name and groups (what `spawner.user` gives the gate).
"""

from __future__ import annotations

import asyncio
import base64
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from tornado import web
from traitlets.config import Config

from hubfleet import environment_choice
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.validate import load_fleet
from hubfleet.render.chart_check import ChartCheckError, helm_binary, helm_template
from hubfleet.render.environments_k8s import EXTRA_CONFIG_KEY, gate_source
from hubfleet.render.kubernetes import render_z2jh_values, secret_placeholders, to_yaml, values_yaml

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "k8s-fleet"
CHART = HERE.parent.parent / "shared" / "charts" / "jupyterhub-4.4.0.tgz"
CHART_TOLERATIONS = [
    {"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"},
    {"key": "hub.jupyter.org_dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"},
]
"""z2jh 4.4.0's default `scheduling.userPods.tolerations` (its jupyterhub_config.py sets them)."""
GPU_TEAM = "research-lab:gpu-users"
KUBECONFIG = """\
apiVersion: v1
kind: Config
current-context: none
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
users: [{name: none, user: {token: not-a-cluster}}]
"""


@pytest.fixture(scope="module")
def fleet() -> FleetConfig:
    return load_fleet(FIXTURE)


# --------------------------------------------------------------------------- values


def test_profile_list_of_a_github_hub(fleet: FleetConfig) -> None:
    values = render_z2jh_values(fleet, fleet.hubs["lab"])
    python, custom = values["singleuser"]["profileList"]
    assert python["slug"] == "python" and python["default"] is True
    assert python["kubespawner_override"] == {
        "image": "quay.io/jupyter/scipy-notebook:2025-06-02",
        "environment": {"LAB_SHARED_DATA": "/home/jovyan/shared"},
    }
    size = python["profile_options"]["size"]
    assert size["choices"]["small"] == {
        "display_name": "Small (4 GB)",
        "default": True,
        "kubespawner_override": {"mem_limit": "4G", "mem_guarantee": "2G"},
    }
    assert size["choices"]["gpu"]["kubespawner_override"] == {
        "image": "quay.io/jupyter/pytorch-notebook:cuda12-2025-06-02",
        "mem_limit": "16G",
        "mem_guarantee": "12G",
        "extra_resource_limits": {"nvidia.com/gpu": "1"},
        "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
        ],
        "environment": {"NVIDIA_DRIVER_CAPABILITIES": "compute,utility"},
    }
    assert "groups" not in size["choices"]["gpu"]  # KubeSpawner knows no groups: the gate applies them
    assert "unlisted_choice" not in size
    assert custom["kubespawner_override"] == {"default_url": "/lab"}
    image = custom["profile_options"]["image"]
    assert image["unlisted_choice"] == {
        "enabled": True,
        "display_name": "Another image of quay.io/research-lab",
        "display_name_in_choices": "Another image of quay.io/research-lab",
        "validation_regex": r"^quay\.io/research-lab/[a-z0-9-]+:[A-Za-z0-9._-]+$",
        "validation_message": r"must match ^quay\.io/research-lab/[a-z0-9-]+:[A-Za-z0-9._-]+$",
        "kubespawner_override": {"image": "{value}"},
    }
    gate = values["hub"]["extraConfig"][EXTRA_CONFIG_KEY]
    assert "_hubfleet_environments_gate(c, _HUBFLEET_GATE_SOURCE, _HUBFLEET_ENVIRONMENTS)" in gate


def test_native_groups_and_hubs_without_environments(fleet: FleetConfig) -> None:
    physics = render_z2jh_values(fleet, fleet.hubs["physics"])
    assert physics["hub"]["config"]["JupyterHub"]["load_groups"] == {
        "gpu-class": {"users": ["hubfleet-check", "marie", "pierre"]}
    }
    bio = render_z2jh_values(fleet, fleet.hubs["bio-staging"])
    assert "profileList" not in bio["singleuser"]
    assert EXTRA_CONFIG_KEY not in bio["hub"].get("extraConfig", {})
    assert "load_groups" not in bio["hub"]["config"].get("JupyterHub", {})


def test_embedded_gate_is_environment_choice() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(gate_source(), "gate", "exec"), namespace)
    assert Path(environment_choice.__file__).read_text() == gate_source()
    assert namespace["resolve"].__doc__ == environment_choice.resolve.__doc__


@pytest.mark.parametrize("hub_name", ["lab", "astro-staging", "physics"])
def test_helm_template_carries_profiles_and_gate(fleet: FleetConfig, hub_name: str, tmp_path: Path) -> None:
    """The real chart takes the values (its schema checks them) and puts them in the hub's secret, from
    which its jupyterhub_config.py reads profileList and extraConfig."""
    try:
        helm = helm_binary()
    except ChartCheckError as exc:
        pytest.fail(str(exc))
    if helm is None or not CHART.is_file():
        pytest.skip("no helm or no chart: run scripts/install-helm.sh; the chart is in the shared directory")
    hub = fleet.hubs[hub_name]
    values, secrets = tmp_path / "values.yaml", tmp_path / "secrets.yaml"
    values.write_text(values_yaml(fleet, hub))
    secrets.write_text(to_yaml(secret_placeholders(fleet, hub)))
    manifests = helm_template(CHART, [values, secrets], release=hub.name, namespace=hub.name, helm=helm)
    documents = [d for d in yaml.safe_load_all(manifests) if d]
    secret = next(d for d in documents if d["kind"] == "Secret" and d["metadata"]["name"] == "hub")
    seen = yaml.safe_load(base64.b64decode(secret["data"]["values.yaml"]))
    rendered = render_z2jh_values(fleet, hub)
    assert seen["singleuser"]["profileList"] == rendered["singleuser"]["profileList"]
    assert seen["hub"]["extraConfig"][EXTRA_CONFIG_KEY] == rendered["hub"]["extraConfig"][EXTRA_CONFIG_KEY]


# --------------------------------------------------------------------------- the gate, with KubeSpawner


class _Group:
    def __init__(self, name: str) -> None:
        self.name = name


def hub_config(fleet: FleetConfig, hub_name: str, **extra: Any) -> Config:
    """What z2jh's jupyterhub_config.py leaves in `c` before hub.extraConfig, then the gate executed."""
    values = render_z2jh_values(fleet, fleet.hubs[hub_name])
    c = Config()
    c.KubeSpawner.profile_list = values["singleuser"]["profileList"]
    c.KubeSpawner.tolerations = list(CHART_TOLERATIONS)
    c.KubeSpawner.node_selector = dict(values["singleuser"].get("nodeSelector") or {})
    for key, value in extra.items():
        setattr(c.KubeSpawner, key, value)
    exec(values["hub"]["extraConfig"][EXTRA_CONFIG_KEY], {"c": c})
    return c


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(path))


def spawn(
    config: Config, groups: list[str], user_options: dict[str, Any], last: dict[str, Any] | None = None
) -> Any:
    """A real KubeSpawner for a user in `groups`: its profile list, then what JupyterHub's user.spawn and
    KubeSpawner.start do before the pod (pre-spawn hook, load_user_options). Returns the spawner, or the
    HTTPError the hook raised."""
    from kubespawner import KubeSpawner

    async def run() -> Any:
        user = types.SimpleNamespace(name="ada", id=7, url="/user/ada/", groups=[_Group(g) for g in groups])
        orm = types.SimpleNamespace(user_options=last or {}, name="", server=None)
        spawner = KubeSpawner(_mock=True, config=config, user=user, orm_spawner=orm)
        spawner.shown = spawner.profile_list(spawner)
        spawner.user_options = dict(user_options)
        try:
            await spawner.run_pre_spawn_hook()
        except web.HTTPError as exc:
            return exc
        await spawner.load_user_options()
        return spawner

    return asyncio.run(run())


def test_gpu_choice_for_the_team(fleet: FleetConfig, kubeconfig: None) -> None:
    spawner = spawn(hub_config(fleet, "lab"), [GPU_TEAM], {"environment": "python", "size": "gpu"})
    assert [p["slug"] for p in spawner.shown] == ["python", "custom"]
    assert list(spawner.shown[0]["profile_options"]["size"]["choices"]) == ["small", "gpu"]
    assert spawner.user_options == {"profile": "python", "size": "gpu"}
    assert spawner.image == "quay.io/jupyter/pytorch-notebook:cuda12-2025-06-02"
    assert spawner.mem_limit == 16 * 1024**3 and spawner.mem_guarantee == 12 * 1024**3
    assert spawner.extra_resource_limits == {"nvidia.com/gpu": "1"}
    assert spawner.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    # the chart's own tolerations stay (an override's list would replace them), the GPU taint's is added
    assert spawner.tolerations == [
        *CHART_TOLERATIONS,
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"},
    ]
    assert spawner.environment == {
        "LAB_SHARED_DATA": "/home/jovyan/shared",
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
    }


def test_gpu_choice_hidden_and_refused_for_others(fleet: FleetConfig, kubeconfig: None) -> None:
    config = hub_config(fleet, "lab")
    refused = spawn(config, ["research-lab:hub-users"], {"environment": "python", "size": "gpu"})
    assert isinstance(refused, web.HTTPError) and refused.status_code == 400
    assert refused.log_message == (
        "choice 'gpu' of option 'size' is only for members of group(s) research-lab:gpu-users; you are in "
        "none of them: ask the hub's admins, or pick one of: small"
    )
    # KubeSpawner's own keys (its form posts them) are gated the same way
    refused = spawn(config, [], {"profile": "python", "size": "gpu"})
    assert isinstance(refused, web.HTTPError) and "only for members" in str(refused.log_message)
    # what the user is shown: no GPU choice
    spawner = spawn(config, [], {})
    assert list(spawner.shown[0]["profile_options"]["size"]["choices"]) == ["small"]
    # no options: the default environment and choice
    assert spawner.user_options == {"profile": "python", "size": "small"}
    assert spawner.image == "quay.io/jupyter/scipy-notebook:2025-06-02"
    assert spawner.mem_limit == 4 * 1024**3
    assert spawner.extra_resource_limits == {}
    assert spawner.tolerations == CHART_TOLERATIONS


def test_other_image_checked_by_the_regex(fleet: FleetConfig, kubeconfig: None) -> None:
    config = hub_config(fleet, "lab")
    ours = "quay.io/research-lab/paper-2024:v3"
    spawner = spawn(config, [], {"environment": "custom", "image": ours})
    assert spawner.user_options == {"profile": "custom", "image--unlisted-choice": ours}
    assert spawner.image == ours and spawner.default_url == "/lab"
    # KubeSpawner's form answer: the select says "unlisted-choice", the text field holds the image
    form = {"profile": "custom", "image": "unlisted-choice", "image--unlisted-choice": ours}
    assert spawn(config, [], form).image == ours
    refused = spawn(config, [], {"environment": "custom", "image": "docker.io/evil/miner:1"})
    assert isinstance(refused, web.HTTPError) and refused.status_code == 400
    assert refused.log_message == (
        r"image 'docker.io/evil/miner:1' does not match ^quay\.io/research-lab/[a-z0-9-]+:[A-Za-z0-9._-]+$"
    )
    refused = spawn(config, [], {"environment": "nope"})
    assert refused.log_message == "no environment 'nope' on this hub; pick one of: python, custom"


def test_last_choice_preselected(fleet: FleetConfig, kubeconfig: None) -> None:
    config = hub_config(fleet, "lab")
    shown = spawn(config, [GPU_TEAM], {}, last={"environment": "python", "size": "gpu"}).shown
    assert shown[0]["default"] is True and shown[1]["default"] is False
    choices = shown[0]["profile_options"]["size"]["choices"]
    assert choices["gpu"]["default"] is True and choices["small"]["default"] is False
    shown = spawn(config, [], {}, last={"environment": "custom"}).shown
    assert [p["default"] for p in shown] == [False, True]
    # a last choice that is no longer open is not preselected
    shown = spawn(config, [], {}, last={"environment": "python", "size": "gpu"}).shown
    assert shown[0]["profile_options"]["size"]["choices"]["small"]["default"] is True


def test_environment_limited_to_an_oidc_group(fleet: FleetConfig, kubeconfig: None) -> None:
    config = hub_config(fleet, "astro-staging")
    assert [p["slug"] for p in spawn(config, ["astro-members"], {}).shown] == ["cpu"]
    refused = spawn(config, ["astro-members"], {"environment": "gpu"})
    assert refused.status_code == 400
    assert refused.log_message.startswith("environment 'gpu' is only for members of group(s) astro-gpu")
    spawner = spawn(config, ["astro-gpu"], {"environment": "gpu"})
    assert [p["slug"] for p in spawner.shown] == ["cpu", "gpu"]
    assert spawner.extra_resource_limits == {"nvidia.com/gpu": "1"}
    assert spawner.tolerations[-1] == {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def test_an_earlier_pre_spawn_hook_still_runs(fleet: FleetConfig, kubeconfig: None) -> None:
    seen: list[dict[str, Any]] = []
    config = hub_config(fleet, "physics", pre_spawn_hook=lambda s: seen.append(dict(s.user_options)))
    spawn(config, ["gpu-class"], {"environment": "gpu"})
    assert seen == [{"profile": "gpu"}]
    refused = spawn(config, [], {"environment": "gpu"})
    assert refused.status_code == 400 and len(seen) == 1  # refused before the operator's hook


def test_kubespawner_form_shows_only_what_is_open(fleet: FleetConfig, kubeconfig: None) -> None:
    """KubeSpawner's own form template and form parser, on the gate's profile list."""
    from kubespawner import KubeSpawner

    config = hub_config(fleet, "lab")

    async def form(groups: list[str]) -> tuple[str, dict[str, Any]]:
        user = types.SimpleNamespace(name="ada", id=7, url="/u/", groups=[_Group(g) for g in groups])
        orm = types.SimpleNamespace(user_options={}, name="", server=None)
        spawner = KubeSpawner(_mock=True, config=config, user=user, orm_spawner=orm)
        html = await spawner.options_form(spawner)
        ours = "quay.io/research-lab/paper-2024:v3"
        posted = spawner.options_from_form(
            {
                "profile": ["custom"],
                "profile-option-custom--image": ["unlisted-choice"],
                "profile-option-custom--image--unlisted-choice": [ours],
            }
        )
        return html, posted

    html, posted = asyncio.run(form([]))
    assert 'value="small"' in html and 'value="gpu"' not in html
    assert "Another image of quay.io/research-lab" in html
    html, _ = asyncio.run(form([GPU_TEAM]))
    assert 'value="gpu"' in html
    # what the form posts is what the gate reads
    spawner = spawn(config, [], posted)
    assert spawner.image == "quay.io/research-lab/paper-2024:v3"


def test_gate_runs_before_the_user_database_hook(fleet: FleetConfig, kubeconfig: None) -> None:
    """With a per-user database too, both hooks chain in z2jh's key order: a refused choice never reaches the
    database volume's creation; an allowed one does (it then fails to reach the API server: there is none)."""
    from kubespawner import KubeSpawner

    from hubfleet.config.models_environments import UserDatabase

    hub = fleet.hubs["lab"].model_copy(update={"user_database": UserDatabase(engine="postgres")})
    values = render_z2jh_values(fleet, hub)
    hooks = sorted(k for k in values["hub"]["extraConfig"] if k.startswith("hubfleet-20-"))
    assert hooks == [EXTRA_CONFIG_KEY, "hubfleet-20-user-database"]
    c = Config()
    c.KubeSpawner.profile_list = values["singleuser"]["profileList"]
    for key in hooks:
        exec(values["hub"]["extraConfig"][key], {"c": c})

    async def start(groups: list[str]) -> BaseException:
        user = types.SimpleNamespace(name="ada", id=7, url="/u/", groups=[_Group(g) for g in groups])
        orm = types.SimpleNamespace(user_options={}, name="", server=None)
        spawner = KubeSpawner(_mock=True, config=c, user=user, orm_spawner=orm)
        spawner.user_options = {"environment": "python", "size": "gpu"}
        try:
            await spawner.run_pre_spawn_hook()
        except BaseException as exc:  # noqa: BLE001 - which error is the point
            return exc
        raise AssertionError("the hooks did not stop: a cluster answered?")

    refused = asyncio.run(start([]))
    assert isinstance(refused, web.HTTPError) and refused.status_code == 400
    reached = asyncio.run(start([GPU_TEAM]))
    # past the gate, at the database volume's creation: the API server's address, where nothing listens
    assert isinstance(reached, OSError) and "127.0.0.1:9" in str(reached), repr(reached)

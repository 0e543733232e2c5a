"""Memory and CPU sizes: what operators write is accepted, and what hubfleet renders is what the real spawners
accept, byte for byte.

The spawners are the real ones: KubeSpawner (jupyterhub-kubespawner from PyPI, a test dependency) and
JupyterHub's LocalProcessSpawner; each rendered value is assigned to their `mem_limit`/`cpu_limit` traits. A
KubeSpawner instance needs a kube config to build its API client: the test gives it one naming a server that
is never contacted (no Kubernetes API server can run here; nothing is sent to it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyterhub.spawner import LocalProcessSpawner
from pydantic import ValidationError
from traitlets import TraitError

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import FleetSettings, Hub, KubernetesCluster, LocalCluster, Resources
from hubfleet.config.quantities import cpu_cores, memory_bytes, spawner_memory
from hubfleet.isolation.cgroups import Limits, parse_memory
from hubfleet.render.kubernetes import render_z2jh_values
from hubfleet.render.local import LocalRuntime, render_jupyterhub_config

GiB, MiB = 1024**3, 1024**2

MEMORY = [
    ("4Gi", 4 * GiB),
    ("4G", 4 * GiB),
    ("512Mi", 512 * MiB),
    ("1.5G", 3 * GiB // 2),
    ("1G", GiB),
    ("500M", 500 * MiB),
    ("100K", 100 * 1024),
    ("1Ti", 1024**4),
    ("1.1G", int(1.1 * GiB)),
    (1073741824, GiB),
    ("1073741824", GiB),
    ("1000000000", 1_000_000_000),
]

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


@pytest.fixture(scope="module")
def kube_spawner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real KubeSpawner (its traits validate as on a hub), built inside an event loop as on a hub."""
    config = tmp_path_factory.mktemp("kube") / "config"
    config.write_text(KUBECONFIG)
    mp = pytest.MonkeyPatch()
    mp.setenv("KUBECONFIG", str(config))
    from kubernetes_asyncio.config import kube_config
    from kubespawner import KubeSpawner

    # read from $KUBECONFIG when the module is first imported, which may have been before this fixture
    mp.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(config))
    loop = asyncio.new_event_loop()

    async def build() -> Any:
        return KubeSpawner(_mock=True)

    spawner = loop.run_until_complete(build())
    yield spawner
    loop.run_until_complete(spawner.api.api_client.close())
    loop.close()
    mp.undo()


@pytest.mark.parametrize(("written", "size"), MEMORY)
def test_memory_sizes_reach_both_spawners_as_the_same_bytes(
    kube_spawner: Any, written: str | int, size: int
) -> None:
    assert memory_bytes(written) == size
    rendered = spawner_memory(written)
    local = LocalProcessSpawner()
    local.mem_limit = rendered
    kube_spawner.mem_limit = rendered
    kube_spawner.mem_guarantee = rendered
    assert local.mem_limit == kube_spawner.mem_limit == kube_spawner.mem_guarantee == size
    # the local control groups read the fleet file's text the same way
    assert parse_memory(str(written)) == size
    assert Limits(memory_bytes=parse_memory(str(written))).memory_bytes == size


def test_kubernetes_quantities_fail_on_the_spawners_verbatim(kube_spawner: Any) -> None:
    """Why normalising is needed: what hubfleet used to render verbatim fails every spawn."""
    for verbatim in ("4Gi", "512Mi", "1048576"):
        with pytest.raises(TraitError, match="not a valid memory specification"):
            kube_spawner.mem_limit = verbatim
    assert spawner_memory("4Gi") == "4G"
    assert spawner_memory("1048576") == "1M"
    assert spawner_memory("1.1G") == int(1.1 * GiB)  # no whole KiB: an integer, which both accept


@pytest.mark.parametrize(
    ("written", "hint"),
    [
        ("4GB", "write 4G or 4Gi"),
        ("4gb", "write 4G or 4Gi"),
        ("1g", "write 1G or 1Gi"),
        ("-1", "more than 0 bytes"),
        (-1, "more than 0 bytes"),
        ("0", "more than 0 bytes"),
        ("lots", "such as 2G"),
        ("1.5", "such as 2G"),
        ("1e9", "such as 2G"),
        ("2P", "such as 2G"),
    ],
)
def test_bad_memory_sizes_say_what_to_write(written: str | int, hint: str) -> None:
    with pytest.raises(ValueError, match=hint) as error:
        memory_bytes(written)
    assert repr(written) in str(error.value)


@pytest.mark.parametrize(
    ("written", "cores"), [("500m", 0.5), ("0.5", 0.5), (0.5, 0.5), (2, 2.0), ("2", 2.0), ("1500m", 1.5)]
)
def test_cpu_reaches_both_spawners(kube_spawner: Any, written: str | float, cores: float) -> None:
    assert cpu_cores(written) == cores
    local = LocalProcessSpawner()
    local.cpu_limit = cpu_cores(written)
    kube_spawner.cpu_limit = cpu_cores(written)
    kube_spawner.cpu_guarantee = cpu_cores(written)
    assert local.cpu_limit == kube_spawner.cpu_limit == kube_spawner.cpu_guarantee == cores


@pytest.mark.parametrize(
    ("written", "hint"), [("500M", "lower case"), ("0", "more than 0"), ("lots", "500m")]
)
def test_bad_cpu_says_what_to_write(written: str, hint: str) -> None:
    with pytest.raises(ValueError, match=hint):
        cpu_cores(written)


def _fleet(hub: Hub, cluster: Any) -> FleetConfig:
    return FleetConfig(
        root=Path("/nonexistent"),
        settings=FleetSettings(name="units"),
        clusters={cluster.name: cluster},
        hubs={hub.name: hub},
    )


def _hub(**fields: Any) -> Hub:
    base = {
        "name": "units",
        "community": "units",
        "cluster": "k",
        "stage": "staging",
        "auth": {"type": "dummy"},
    }
    return Hub.model_validate({**base, **fields})


def test_kubernetes_hub_with_4gi_validates_and_renders_what_kubespawner_takes(kube_spawner: Any) -> None:
    hub = _hub(
        domain="units.example.org",
        resources={
            "memory_limit": "4Gi",
            "memory_guarantee": "512Mi",
            "cpu_limit": "1500m",
            "cpu_guarantee": 0.5,
        },
        environments=[
            {"display_name": "Big", "slug": "big", "resources": {"memory_limit": "16Gi", "cpu_limit": "4"}},
            {
                "display_name": "Odd",
                "slug": "odd",
                "resources": {"memory_guarantee": 1500000000, "cpu_guarantee": "250m"},
            },
        ],
    )
    cluster = KubernetesCluster.model_validate(
        {
            "name": "k",
            "kind": "kubernetes",
            "credentials": {"provider": "kubeconfig", "path": "kubeconfig.yaml"},
        }
    )
    values = render_z2jh_values(_fleet(hub, cluster), hub)
    single = values["singleuser"]
    assert single["memory"] == {"limit": "4G", "guarantee": "512M"}
    assert single["cpu"] == {"limit": 1.5, "guarantee": 0.5}
    kube_spawner.mem_limit = single["memory"]["limit"]
    kube_spawner.mem_guarantee = single["memory"]["guarantee"]
    kube_spawner.cpu_limit = single["cpu"]["limit"]
    assert (kube_spawner.mem_limit, kube_spawner.mem_guarantee) == (4 * GiB, 512 * MiB)
    big, odd = (p["kubespawner_override"] for p in single["profileList"])
    assert big == {"mem_limit": "16G", "cpu_limit": 4.0}
    assert odd == {"mem_guarantee": 1500000000, "cpu_guarantee": 0.25}
    for override in (big, odd):  # what KubeSpawner does with a profile's override: set each trait
        for trait, value in override.items():
            setattr(kube_spawner, trait, value)
    assert kube_spawner.mem_limit == 16 * GiB and kube_spawner.mem_guarantee == 1500000000


def test_local_hub_config_sets_mem_limit_the_spawner_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = _hub(port=18999, resources={"memory_limit": "1536Mi", "cpu_limit": "500m"})
    cluster = LocalCluster(name="k", kind="local")
    runtime = LocalRuntime(
        data_dir=tmp_path, homes_dir=tmp_path, hub_port=1, proxy_api_port=2, bin_dir=tmp_path, as_root=False
    )
    text = render_jupyterhub_config(_fleet(hub, cluster), hub, runtime)
    assert "c.Spawner.mem_limit = '1536M'" in text
    assert "c.Spawner.cpu_limit = 0.5" in text
    from traitlets.config import Config

    config = Config()
    monkeypatch.setenv("HUBFLEET_CONTROL_TOKEN", "unused")
    monkeypatch.setenv("HUBFLEET_OPERATOR_TOKEN", "unused")
    exec(compile(text, "jupyterhub_config.py", "exec"), {"get_config": lambda: config})  # noqa: S102
    spawner = LocalProcessSpawner(config=config)
    assert spawner.mem_limit == 1536 * MiB
    assert spawner.cpu_limit == 0.5


def test_fleet_files_accept_quantities_and_reject_bad_ones() -> None:
    resources = Resources.model_validate(
        {"memory_limit": 1073741824, "memory_guarantee": "512Mi", "cpu_limit": "500m", "cpu_guarantee": 1}
    )
    assert resources.memory_limit == "1073741824"  # kept as written; rendered by spawner_memory
    assert (resources.cpu_limit, resources.cpu_guarantee) == (0.5, 1.0)
    for bad, hint in (({"memory_limit": "4GB"}, "write 4G or 4Gi"), ({"cpu_limit": "500M"}, "millicores")):
        with pytest.raises(ValidationError, match=hint):
            Resources.model_validate(bad)
    with pytest.raises(ValidationError, match="less than or equal to 256"):
        Resources.model_validate({"cpu_limit": 300})

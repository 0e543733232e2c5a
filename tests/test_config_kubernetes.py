"""The `kubernetes` settings block and cluster chart settings: model, defaults merge, rules with positions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fleet_helpers import DEMO, NO_STATE, edit
from hubfleet.config import rules_hubs
from hubfleet.config.loader import load_fleet_files
from hubfleet.config.models import Z2JH_CHART_REPO, Z2JH_CHART_VERSION, KubernetesCluster
from hubfleet.config.validate import validate_fleet

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "k8s-fleet"
PHYSICS = "communities/physics/hubs/prod.yaml"


@pytest.fixture
def k8s(tmp_path: Path) -> Path:
    root = tmp_path / "fleet"
    shutil.copytree(FIXTURE, root)
    return root


def test_fixture_is_valid_and_merges_defaults() -> None:
    config, errors = validate_fleet(FIXTURE)
    assert errors == [] and config is not None
    gke = config.clusters["gke"]
    assert isinstance(gke, KubernetesCluster)
    assert (gke.chart_version, gke.chart_repo) == (Z2JH_CHART_VERSION, Z2JH_CHART_REPO)
    assert config.clusters["aks"].chart_version == "4.3.5"  # type: ignore[union-attr]
    physics = config.hubs["physics"].kubernetes
    assert physics is not None
    # `kubernetes` merges field by field: the image from defaults, placeholders from the hub file
    assert physics.image is not None and physics.image.name == "quay.io/jupyter/scipy-notebook"
    assert physics.placeholders == 3
    assert config.hubs["chem-staging"].kubernetes.image.name == "quay.io/jupyter/r-notebook"  # type: ignore[union-attr]


def test_kubernetes_settings_on_local_hub(tmp_path: Path) -> None:
    root = tmp_path / "fleet"
    shutil.copytree(DEMO, root, ignore=NO_STATE)
    edit(
        root / "communities/uni-a/hubs/prod.yaml",
        "max_users: 100",
        "max_users: 100\nkubernetes:\n  placeholders: 2",
    )
    errors = rules_hubs.kubernetes_settings_on_kubernetes_hubs(load_fleet_files(root)[0])  # type: ignore[arg-type]
    assert [str(e) for e in errors] == [
        "communities/uni-a/hubs/prod.yaml:12:1: kubernetes: kubernetes settings on a hub of local cluster "
        "'local'; remove them or move the hub to a kubernetes cluster"
    ]


def test_kubernetes_defaults_are_ignored_on_local_hubs(tmp_path: Path) -> None:
    root = tmp_path / "fleet"
    shutil.copytree(DEMO, root, ignore=NO_STATE)
    edit(root / "fleet.yaml", "  default_ui: lab", "  default_ui: lab\n  kubernetes:\n    placeholders: 1")
    assert validate_fleet(root)[1] == []


def test_environment_slugs_unique_and_one_default(k8s: Path) -> None:
    edit(k8s / PHYSICS, "slug: large", "slug: small\n  default: true")
    errors = rules_hubs.environments_consistent(load_fleet_files(k8s)[0])  # type: ignore[arg-type]
    assert [str(e) for e in errors] == [
        f"{PHYSICS}:22:3: environments[1].slug: 'small' is already used by environments[0]; "
        "give each environment its own slug",
        f"{PHYSICS}:23:3: environments[1].default: environments[0] is already the default; "
        "at most one environment may set `default: true`",
    ]
    _, all_errors = validate_fleet(k8s)
    assert len(all_errors) == 2


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("placeholders: 3", "placeholders: -1", "kubernetes.placeholders: must be at least 0, got -1"),
        (
            "memory_limit: 8G",
            "memory_limit: lots",
            "environments[1].resources.memory_limit: 'lots' is not a memory",
        ),
        ("slug: gpu", "slug: GPU", "environments[2].slug: 'GPU' is not a valid name"),
        ("placeholders: 3", "placeholders: 3\n  storage: big", "kubernetes.storage: 'big' does not match"),
        ("placeholders: 3", "placeholders: 3\n  replicas: 2", "kubernetes.replicas: unknown key"),
    ],
)
def test_model_errors_point_at_the_key(k8s: Path, old: str, new: str, message: str) -> None:
    edit(k8s / PHYSICS, old, new)
    _, errors = validate_fleet(k8s)
    assert len(errors) == 1 and errors[0].file == PHYSICS
    assert errors[0].message.startswith(message), errors[0].message


def test_old_profiles_key_prints_the_environments_lines(k8s: Path) -> None:
    """A fleet still on `kubernetes.profiles` is told what to write instead, line for line."""
    edit(
        k8s / PHYSICS,
        "kubernetes:\n",
        "kubernetes:\n  profiles:\n    - {display_name: Big, slug: big, memory_limit: 8G, "
        "image: {name: quay.io/x/y, tag: '1'}}\n",
    )
    _, errors = validate_fleet(k8s)
    (error,) = [e for e in errors if "profiles" in e.message]
    assert error.file == PHYSICS
    assert "`kubernetes.profiles` was replaced by `environments`" in error.message
    assert "- slug: big\n  display_name: Big\n  image: quay.io/x/y:1\n  resources:\n    memory_limit: 8G" in (
        error.message
    )

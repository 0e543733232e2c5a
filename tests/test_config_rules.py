"""Cross-file rules, each on its own, plus the generated docs staying in sync with the models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet_helpers import DEMO, copy_demo_without_front_door, edit
from hubfleet.config import rules, rules_auth, rules_hubs
from hubfleet.config.defaults import merge_rule
from hubfleet.config.loader import SourcedFleetConfig, load_fleet_files
from hubfleet.config.models import HubSettings
from hubfleet.config.schema import fleet_json_schemas, render_reference
from hubfleet.config.validate import validate_fleet

REPO = Path(__file__).resolve().parents[1]
UNI = "communities/uni-a/hubs/prod.yaml"
UNI_STAGING = "communities/uni-a/hubs/staging.yaml"


def load_unchecked(root: Path) -> SourcedFleetConfig:
    """The loaded fleet before rules run (rules are then called one by one)."""
    config, errors = load_fleet_files(root)
    assert errors == [] and config is not None
    return config


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    root = tmp_path / "fleet"
    copy_demo_without_front_door(root)
    return root


def test_demo_passes_every_rule() -> None:
    config = load_unchecked(DEMO)
    for rule in rules.RULES:
        assert rule(config) == [], rule.__name__


def test_unique_hub_names_names_the_first_file(demo: Path) -> None:
    edit(demo / "communities/hackweek/hubs/staging.yaml", "name: hackweek-staging", "name: uni-a-staging")
    errors = rules_hubs.unique_hub_names(load_unchecked(demo))
    assert [str(e) for e in errors] == [
        f"{UNI_STAGING}:2:1: name: hub name 'uni-a-staging' is already used by "
        "communities/hackweek/hubs/staging.yaml; hub names must be unique in the fleet"
    ]


def test_unique_domains(demo: Path) -> None:
    (demo / "clusters/k8s.yaml").write_text(
        "name: k8s\nkind: kubernetes\ncredentials:\n  provider: kubeconfig\n  path: kubeconfig\n"
    )
    for rel in (UNI, UNI_STAGING):
        edit(demo / rel, "cluster: local", "cluster: k8s")
        edit(demo / rel, "port: 1800", "domain: hub.example.org\n#")
    config = load_unchecked(demo)
    assert [str(e) for e in rules_hubs.unique_domains(config)] == [
        f"{UNI_STAGING}:7:1: domain: hub.example.org is already used by hub 'uni-a' ({UNI}); "
        "give each hub its own domain"
    ]
    assert rules_hubs.port_or_domain_by_cluster_kind(config) == []


def test_kubernetes_hub_needs_domain_not_port(demo: Path) -> None:
    (demo / "clusters/k8s.yaml").write_text(
        "name: k8s\nkind: kubernetes\ncredentials:\n  provider: gcp\n  project: p\n  zone: z\n  cluster: c\n"
    )
    edit(demo / UNI, "cluster: local", "cluster: k8s")
    assert [str(e) for e in rules_hubs.port_or_domain_by_cluster_kind(load_unchecked(demo))] == [
        f"{UNI}:2:1: domain: required for hubs on kubernetes cluster 'k8s'; add `domain: <hub.example.org>`",
        f"{UNI}:7:1: port: hubs on kubernetes cluster 'k8s' are served on their domain; remove port",
    ]


def test_prod_needs_staging_on_same_cluster(demo: Path) -> None:
    (demo / "communities/uni-a/hubs/staging.yaml").unlink()
    assert [str(e) for e in rules_hubs.prod_has_staging(load_unchecked(demo))] == [
        f"{UNI}:6:1: stage: prod hub 'uni-a' needs a staging hub of community 'uni-a' on cluster 'local' "
        "to deploy to first; add one in communities/uni-a/hubs/, or name a staging hub of the cluster in "
        "clusters/local.yaml (`staging_hub: NAME`)"
    ]


def test_admins_from_defaults_count(demo: Path) -> None:
    fleet = demo / "fleet.yaml"
    edit(fleet, "defaults:\n", "defaults:\n  auth:\n    type: native\n    admin_users: []\n")
    line = fleet.read_text().splitlines().index("    admin_users: []") + 1
    edit(demo / UNI, "auth:\n  type: native\n  admin_users: [grace]\n", "")
    config = load_unchecked(demo)
    assert [str(e) for e in rules_auth.admins_not_empty(config)] == [
        f"fleet.yaml:{line}:5: auth.admin_users: hub 'uni-a' has no admin users; list at least one"
    ]
    assert rules_auth.has_auth(config) == []


def test_dummy_auth_from_defaults_refused_on_prod(demo: Path) -> None:
    fleet = demo / "fleet.yaml"
    edit(fleet, "defaults:\n", "defaults:\n  auth:\n    type: dummy\n    admin_users: [ada]\n")
    line = fleet.read_text().splitlines().index("    type: dummy") + 1
    edit(demo / UNI, "auth:\n  type: native\n  admin_users: [grace]\n", "")
    assert [str(e) for e in rules_auth.no_dummy_auth_on_prod(load_unchecked(demo))] == [
        f"fleet.yaml:{line}:5: auth.type: dummy auth is refused on prod hub 'uni-a'; use `type: native`"
    ]


def test_reference_without_close_match_lists_known_names(demo: Path) -> None:
    edit(demo / UNI, "cluster: local", "cluster: zzz")
    assert [str(e) for e in rules_hubs.references_resolve(load_unchecked(demo))] == [
        f"{UNI}:5:1: cluster: unknown cluster 'zzz'; known clusters: local"
    ]


def test_validate_runs_the_rules(demo: Path) -> None:
    edit(demo / UNI, "type: native", "type: dummy")
    config, errors = validate_fleet(demo)
    assert config is None
    assert len(errors) == 1 and "dummy auth is refused" in errors[0].message


def test_config_reference_is_generated() -> None:
    """docs/config-reference.md must equal render_reference(): run `python -m hubfleet.config.schema`."""
    assert (REPO / "docs" / "config-reference.md").read_text() == render_reference()


def test_operator_guide_states_the_merge_rule() -> None:
    """The guide's hand-written account of `defaults` says what the code does (config/defaults.py)."""
    guide = " ".join((REPO / "docs" / "operator-guide.md").read_text().split())
    assert merge_rule() in guide
    for name in HubSettings.model_fields:
        assert f"`{name}`" in guide, name


def test_committed_json_schemas_are_generated() -> None:
    for kind, schema in fleet_json_schemas().items():
        committed = json.loads((REPO / "docs" / "schema" / f"{kind}.schema.json").read_text())
        assert committed == schema, f"run `python -m hubfleet.config.schema` ({kind})"


def test_demo_files_point_at_the_schemas() -> None:
    """Each demo file names a schema inside the fleet (its schema/, as `hubfleet schema` writes it), so the
    comments still work in a copy of the fleet anywhere; and those schemas are the generated ones."""
    for path in sorted(DEMO.rglob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        target = (path.parent / first.split("=", 1)[1]).resolve()
        assert target.is_file(), target
        assert target.parent == (DEMO / "schema").resolve(), f"{path}: {target} is outside the fleet"
    for kind, schema in fleet_json_schemas().items():
        committed = json.loads((DEMO / "schema" / f"{kind}.schema.json").read_text())
        assert committed == schema, f"run `hubfleet schema --fleet examples/demo-fleet` ({kind})"


def test_schema_accepts_demo_files() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from ruamel.yaml import YAML

    schemas = fleet_json_schemas()
    for path in sorted(DEMO.rglob("*.yaml")):
        rel = path.relative_to(DEMO).as_posix()
        kind = (
            "fleet"
            if rel == "fleet.yaml"
            else "cluster"
            if rel.startswith("clusters/")
            else "community"
            if path.name == "community.yaml"
            else "hub"
        )
        data = json.loads(json.dumps(YAML(typ="safe").load(path.read_text())))
        jsonschema.validate(data, schemas[kind])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "x", "kind": "local", "colour": 1}, schemas["cluster"])

"""Four layers of settings (fleet.yaml `defaults`, a cluster file's `defaults`, a community.yaml's `defaults`,
the hub file): every merge rule, error positions in each layer, `hubfleet render --explain`, and the escape
hatch that may not replace the authenticator or the spawner on prod hubs.

Every fleet is a real directory written in tmp_path, loaded through the real loader and the real CLI.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_helpers import edit, hubfleet
from hubfleet.config.defaults import merge_layers, merge_rule, merge_tracked
from hubfleet.config.loader import load_fleet_files
from hubfleet.config.models_auth import DummyAuth, GitHubAuth, NativeAuth
from hubfleet.config.validate import load_fleet, validate_fleet
from hubfleet.render.kubernetes import render_z2jh_values

FLEET = """\
name: layered
operators:
  - name: Ada
    email: ada@example.org
    usernames: {native: ada}
defaults:
  auth:
    type: native
    admin_users: [ada]
  resources:
    memory_limit: 1G
    cpu_limit: 1
  culling:
    timeout: 3600
  kubernetes:
    image: {name: quay.io/jupyter/scipy-notebook, tag: "2025-06-02"}
    extra_values:
      ingress:
        annotations:
          fleet.example.org/a: "1"
"""
LOCAL = """\
name: local
kind: local
defaults:
  culling:
    max_age: 7200
  max_users: 40
"""
GKE = """\
name: gke
kind: kubernetes
credentials: {provider: gcp, project: p, zone: europe-west1-b, cluster: one}
defaults:
  resources:
    memory_guarantee: 512M
  kubernetes:
    placeholders: 2
    extra_values:
      ingress:
        annotations:
          cluster.example.org/b: "2"
"""
UNI = """\
name: uni
defaults:
  cluster: gke
  auth:
    type: native
    open_signup: true
  kubernetes:
    node_selector: {pool: uni}
"""
UNI_PROD = """\
name: uni
community: uni
stage: prod
domain: uni.example.org
resources:
  memory_limit: 2G
kubernetes:
  extra_values:
    ingress:
      annotations:
        hub.example.org/c: "3"
"""
UNI_STAGING = """\
name: uni-staging
community: uni
stage: staging
domain: uni-staging.example.org
auth:
  admin_users: [bob]
"""
LAB = "name: lab\n"
LAB_PROD = """\
name: lab
community: lab
cluster: local
stage: prod
port: 18501
max_users: 10
"""
LAB_STAGING = """\
name: lab-staging
community: lab
cluster: local
stage: staging
port: 18502
auth:
  type: dummy
  admin_users: [carol]
"""

UNI_PROD_FILE = "communities/uni/hubs/prod.yaml"
UNI_FILE = "communities/uni/community.yaml"


def write_fleet(root: Path) -> Path:
    files = {
        "fleet.yaml": FLEET,
        "clusters/local.yaml": LOCAL,
        "clusters/gke.yaml": GKE,
        UNI_FILE: UNI,
        UNI_PROD_FILE: UNI_PROD,
        "communities/uni/hubs/staging.yaml": UNI_STAGING,
        "communities/lab/community.yaml": LAB,
        "communities/lab/hubs/prod.yaml": LAB_PROD,
        "communities/lab/hubs/staging.yaml": LAB_STAGING,
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def layered(tmp_path: Path) -> Path:
    return write_fleet(tmp_path / "fleet")


def line_of(path: Path, text: str, nth: int = 1) -> int:
    """1-based line of the nth line of `path` containing `text`."""
    found = [i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    return found[nth - 1]


def errors_of(root: Path) -> list[str]:
    _, errors = validate_fleet(root)
    return [str(e) for e in errors]


# --------------------------------------------------------------------------- merge rules


def test_mappings_merge_at_every_depth_across_four_layers(layered: Path) -> None:
    config = load_fleet(layered)
    uni = config.hubs["uni"]
    assert uni.cluster == "gke"  # from the community's defaults
    res = uni.resources
    # memory_limit: hub over fleet; cpu_limit: fleet; memory_guarantee: cluster
    assert (res.memory_limit, res.cpu_limit, res.memory_guarantee) == ("2G", 1.0, "512M")
    assert uni.culling.timeout == 3600
    assert uni.kubernetes is not None
    assert uni.kubernetes.placeholders == 2  # cluster
    assert uni.kubernetes.node_selector == {"pool": "uni"}  # community
    assert uni.kubernetes.image is not None and uni.kubernetes.image.tag == "2025-06-02"  # fleet
    # extra_values deep-merge: the fleet's and the cluster's ingress annotations survive the hub's own
    assert uni.kubernetes.extra_values["ingress"]["annotations"] == {
        "fleet.example.org/a": "1",
        "cluster.example.org/b": "2",
        "hub.example.org/c": "3",
    }
    values = render_z2jh_values(config, uni)
    for key in ("fleet.example.org/a", "cluster.example.org/b", "hub.example.org/c"):
        assert key in values["ingress"]["annotations"]
    # auth of the same type merges: admins from fleet.yaml, open_signup from the community
    assert uni.auth == NativeAuth(type="native", admin_users=["ada"], open_signup=True)


def test_lists_and_scalars_replace(layered: Path) -> None:
    config = load_fleet(layered)
    staging = config.hubs["uni-staging"]
    # an auth block without `type` extends the inherited one; its list replaces the inherited list
    assert staging.auth == NativeAuth(type="native", admin_users=["bob"], open_signup=True)
    assert config.hubs["lab"].max_users == 10  # hub over the local cluster's 40
    assert config.hubs["lab-staging"].max_users == 40  # local cluster's defaults
    assert config.hubs["lab-staging"].culling.max_age == 7200
    assert config.hubs["lab"].culling.timeout == 3600


def test_auth_of_another_type_replaces_the_inherited_one_whole(layered: Path) -> None:
    """lab-staging says `type: dummy` over the fleet's native auth: open_signup or the fleet's admins would be
    wrong there (and `open_signup` unknown to dummy auth), so nothing is merged."""
    config = load_fleet(layered)
    assert config.hubs["lab-staging"].auth == DummyAuth(type="dummy", admin_users=["carol"])
    assert isinstance(config.hubs["lab"].auth, NativeAuth)


def test_oauth_client_id_per_hub_under_a_community_auth(layered: Path) -> None:
    """A community gives the provider and who may log in; each hub its own OAuth client (its callback URL is
    its own): the layer may leave out the required client_id."""
    edit(
        layered / UNI_FILE,
        "  auth:\n    type: native\n    open_signup: true\n",
        "  auth:\n    type: github\n    admin_users: [uni-admin]\n    allowed_organizations: [uni-org]\n",
    )
    for hub in ("prod", "staging"):
        edit(
            layered / f"communities/uni/hubs/{hub}.yaml",
            "stage:",
            f"auth:\n  client_id: client-{hub}\n  client_secret: {{secret: client_secret}}\nstage:",
        )
    edit(layered / "communities/uni/hubs/staging.yaml", "auth:\n  admin_users: [bob]\n", "")
    _, errors = validate_fleet(layered)
    # the only errors left: the client secrets are not set yet (and nobody can decrypt them)
    assert errors and all("client_secret" in str(e) or "age_recipient" in str(e) for e in errors), errors
    loaded, load_errors = load_fleet_files(layered)
    assert load_errors == [] and loaded is not None
    auth = loaded.hubs["uni"].auth
    assert isinstance(auth, GitHubAuth)
    assert (auth.client_id, auth.allowed_organizations) == ("client-prod", ["uni-org"])
    assert auth.admin_users == ["uni-admin"]  # the fleet's native auth was replaced by the community's github


def test_merge_functions() -> None:
    fleet = {
        "auth": {"type": "native", "admin_users": ["a"]},
        "kubernetes": {"extra_values": {"x": {"y": 1}}},
    }
    cluster = {"kubernetes": {"extra_values": {"x": {"z": 2}}}}
    hub = {"auth": {"type": "dummy"}, "kubernetes": {"extra_values": {"x": {"y": 3}}, "profiles": []}}
    merged = merge_layers([fleet, cluster, {}, hub])
    assert merged == {
        "auth": {"type": "dummy"},
        "kubernetes": {"extra_values": {"x": {"y": 3, "z": 2}}, "profiles": []},
    }
    tracked, origins = merge_tracked([fleet, cluster, {}, hub])
    assert tracked == merged
    assert origins[("kubernetes", "extra_values", "x", "z")] == 1
    assert origins[("kubernetes", "extra_values", "x", "y")] == 3
    assert origins[("auth", "type")] == 3 and ("auth", "admin_users") not in origins
    assert fleet == {
        "auth": {"type": "native", "admin_users": ["a"]},
        "kubernetes": {"extra_values": {"x": {"y": 1}}},
    }
    assert "cluster file" in merge_rule() and "`kubernetes.extra_values` included" in merge_rule()


# --------------------------------------------------------------------------- error positions


def test_errors_in_a_cluster_layer_point_at_the_cluster_file(layered: Path) -> None:
    edit(layered / "clusters/gke.yaml", "    placeholders: 2", "    placeholders: 2\n    imagee: x")
    edit(layered / "clusters/local.yaml", "    max_age: 7200", "    max_age: 7200\n    timeout: 10")
    errors = errors_of(layered)
    gke_line = line_of(layered / "clusters/gke.yaml", "imagee")
    local_line = line_of(layered / "clusters/local.yaml", "timeout: 10")
    assert errors == [
        f"clusters/gke.yaml:{gke_line}:5: defaults.kubernetes.imagee: unknown key; did you mean 'image'?",
        f"clusters/local.yaml:{local_line}:14: defaults.culling.timeout: must be at least 60, got 10",
    ]  # once each, not once per hub of the cluster


def test_errors_in_a_community_layer_point_at_the_community_file(layered: Path) -> None:
    edit(layered / UNI_FILE, "  cluster: gke", "  cluster: gke\n  allow_overrides: [spawner]\n  max_users: 0")
    errors = errors_of(layered)
    line = line_of(layered / UNI_FILE, "allow_overrides")
    assert errors[0].startswith(f"{UNI_FILE}:{line}:3: defaults.allow_overrides: unknown key;")
    assert errors[1] == f"{UNI_FILE}:{line + 1}:14: defaults.max_users: must be at least 1, got 0"
    assert len(errors) == 2


def test_rule_errors_point_at_the_layer_the_value_came_from(layered: Path) -> None:
    """A prod hub's dummy auth from its community's defaults: the error is at the community file's
    `auth.type`, where it must be fixed."""
    edit(layered / UNI_FILE, "    type: native\n    open_signup: true", "    type: dummy")
    errors = [e for e in errors_of(layered) if "dummy auth is refused" in e]
    line = line_of(layered / UNI_FILE, "type: dummy")
    assert errors == [
        f"{UNI_FILE}:{line}:5: auth.type: dummy auth is refused on prod hub 'uni'; use `type: native`"
    ]


def test_a_key_no_layer_gives_is_reported_where_the_block_is(layered: Path) -> None:
    edit(
        layered / UNI_FILE,
        "  auth:\n    type: native\n    open_signup: true\n",
        "  auth:\n    type: github\n    allowed_organizations: [uni-org]\n",
    )
    errors = errors_of(layered)
    line = line_of(layered / UNI_FILE, "auth:")
    staging_line = line_of(layered / "communities/uni/hubs/staging.yaml", "auth:")
    assert errors == [
        f"{UNI_FILE}:{line}:3: auth.client_id: required key missing",  # prod.yaml sets no auth
        f"communities/uni/hubs/staging.yaml:{staging_line}:1: auth.client_id: required key missing",
    ]


def test_an_invalid_value_in_an_untyped_auth_layer_is_reported_in_that_layer(layered: Path) -> None:
    """A cluster layer's auth without `type` can only be checked merged into each hub; the error is still at
    the cluster file, once."""
    edit(layered / "clusters/gke.yaml", "defaults:\n", "defaults:\n  auth:\n    allowed_users: [a b]\n")
    errors = errors_of(layered)
    line = line_of(layered / "clusters/gke.yaml", "allowed_users")
    assert errors == [
        f"clusters/gke.yaml:{line}:21: auth.allowed_users[0]: 'a b' is not a valid username; no spaces or '/'"
    ]


def test_the_cluster_of_a_hub_may_come_from_its_community(layered: Path) -> None:
    edit(layered / UNI_FILE, "  cluster: gke", "  cluster: gkee")
    errors = errors_of(layered)
    line = line_of(layered / UNI_FILE, "cluster: gkee")
    assert f"{UNI_FILE}:{line}:3: cluster: unknown cluster 'gkee'; did you mean 'gke'?" in errors


def test_kubernetes_defaults_in_a_local_cluster_file(layered: Path) -> None:
    edit(
        layered / "clusters/local.yaml",
        "  max_users: 40",
        "  max_users: 40\n  kubernetes:\n    placeholders: 1",
    )
    line = line_of(layered / "clusters/local.yaml", "kubernetes:")
    assert errors_of(layered) == [
        f"clusters/local.yaml:{line}:3: defaults.kubernetes: hubs of local cluster 'local' have no "
        "kubernetes settings; remove it"
    ]


def test_locate_follows_the_layers(layered: Path) -> None:
    config, errors = validate_fleet(layered)
    assert errors == [] and config is not None
    assert config.locate("uni", "resources.memory_limit") == (UNI_PROD_FILE, 6, 3)
    assert config.locate("uni", "resources.memory_guarantee") == ("clusters/gke.yaml", 6, 5)
    assert config.locate("uni", "resources.cpu_limit") == (
        "fleet.yaml",
        line_of(layered / "fleet.yaml", "cpu_limit"),
        5,
    )
    assert config.locate("uni", "auth.open_signup") == (UNI_FILE, 6, 5)
    assert config.locate("uni", "auth.admin_users") == (
        "fleet.yaml",
        line_of(layered / "fleet.yaml", "admin_users"),
        5,
    )
    assert config.locate("uni", "cluster") == (UNI_FILE, 3, 3)
    assert config.locate("uni", "extra_config") == (UNI_PROD_FILE, 1, 1)


# --------------------------------------------------------------------------- render --explain


def test_render_explain_names_the_layer_and_line_of_every_setting(layered: Path) -> None:
    result = hubfleet("render", "--explain", "uni", fleet=layered, check=True)
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if not line.startswith("#")}
    assert rows["resources.memory_limit"].endswith(f"hub ({UNI_PROD_FILE}:6)")
    assert rows["resources.memory_guarantee"].endswith("cluster defaults (clusters/gke.yaml:6)")
    assert rows["resources.cpu_limit"].endswith(
        f"fleet defaults (fleet.yaml:{line_of(layered / 'fleet.yaml', 'cpu_limit')})"
    )
    assert rows["auth.open_signup"].endswith(f"community defaults ({UNI_FILE}:6)")
    assert rows["cluster"].endswith(f"community defaults ({UNI_FILE}:3)")
    assert rows["resources.process_limit"].endswith("built-in default")
    annotations = "kubernetes.extra_values.ingress.annotations."
    assert rows[annotations + "fleet.example.org/a"].endswith("fleet defaults (fleet.yaml:20)")
    assert rows[annotations + "cluster.example.org/b"].endswith("cluster defaults (clusters/gke.yaml:12)")
    assert rows[annotations + "hub.example.org/c"].endswith(f"hub ({UNI_PROD_FILE}:11)")
    assert "'2G'" in rows["resources.memory_limit"]
    head = [line for line in result.stdout.splitlines() if line.startswith("#")]
    assert head[1:] == [
        "#   fleet defaults: fleet.yaml",
        "#   cluster defaults: clusters/gke.yaml",
        f"#   community defaults: {UNI_FILE}",
        f"#   hub: {UNI_PROD_FILE}",
    ]


def test_render_explain_never_prints_a_secret(layered: Path) -> None:
    edit(
        layered / "communities/lab/hubs/staging.yaml",
        "  admin_users: [carol]",
        "  admin_users: [carol]\n  password: hunter2-pw",
    )
    result = hubfleet("render", "--explain", "lab-staging", fleet=layered, check=True)
    assert "hunter2-pw" not in result.stdout
    assert any(line.startswith("auth.password") and "***" in line for line in result.stdout.splitlines())


# --------------------------------------------------------------------------- the escape hatch on prod hubs

REPLACE_AUTH = (
    "extra_config: |\n  c.JupyterHub.shutdown_on_logout = True\n"
    '  c.JupyterHub.authenticator_class = "dummy"\n'
)


def test_extra_config_replacing_the_authenticator_on_prod_is_refused(layered: Path) -> None:
    (layered / "communities/lab/hubs/prod.yaml").write_text(LAB_PROD + REPLACE_AUTH)
    (layered / "communities/lab/hubs/staging.yaml").write_text(LAB_STAGING + REPLACE_AUTH)  # staging may
    result = hubfleet("validate", fleet=layered)
    assert result.returncode != 0
    line = line_of(layered / "communities/lab/hubs/prod.yaml", "authenticator_class")
    output = result.stdout + result.stderr
    expected = (
        f"communities/lab/hubs/prod.yaml:{line}:1: extra_config: replaces the authenticator of prod hub 'lab'"
    )
    assert expected in output, output
    assert "add `allow_overrides: [authenticator]` to communities/lab/hubs/prod.yaml" in output
    assert "lab-staging" not in output

    edit(
        layered / "communities/lab/hubs/prod.yaml",
        "max_users: 10",
        "max_users: 10\nallow_overrides: [authenticator]",
    )
    assert hubfleet("validate", fleet=layered).returncode == 0


def test_extra_values_replacing_the_spawner_on_prod_is_refused(layered: Path) -> None:
    edit(
        layered / UNI_FILE,
        "    node_selector: {pool: uni}",
        "    node_selector: {pool: uni}\n    extra_values:\n      hub:\n        config:\n"
        "          JupyterHub:\n            spawner_class: simple",
    )
    edit(
        layered / UNI_PROD_FILE,
        "  extra_values:\n",
        "  extra_values:\n    hub:\n      extraConfig:\n        mine: |\n          import os\n"
        "          c.JupyterHub.authenticator_class = os.environ['X']\n",
    )
    errors = errors_of(layered)
    community_line = line_of(layered / UNI_FILE, "spawner_class")
    code_line = line_of(layered / UNI_PROD_FILE, "authenticator_class")
    why = (
        "which hubfleet configures and checks (who may log in, staff admins, the synthetic check, "
        "limits); use the hub's settings instead or, if this is intended, add"
    )
    assert errors == [
        f"{UNI_FILE}:{community_line}:28: kubernetes.extra_values.hub.config.JupyterHub.spawner_class: "
        f"replaces the spawner of prod hub 'uni', {why} `allow_overrides: [spawner]` to {UNI_PROD_FILE}",
        f"{UNI_PROD_FILE}:{code_line}:9: kubernetes.extra_values.hub.extraConfig.mine: replaces the "
        f"authenticator of prod hub 'uni', {why} `allow_overrides: [authenticator]` to {UNI_PROD_FILE}",
    ]
    edit(layered / UNI_PROD_FILE, "stage: prod", "stage: prod\nallow_overrides: [authenticator, spawner]")
    assert errors_of(layered) == []


def test_inherited_kubernetes_settings_mean_nothing_on_local_hubs(layered: Path) -> None:
    """A `{secret: KEY}` in fleet.yaml's extra_values is needed by the kubernetes hubs only."""
    edit(
        layered / "fleet.yaml",
        '          fleet.example.org/a: "1"',
        "          fleet.example.org/a: {secret: tok}",
    )
    unset = [e for e in errors_of(layered) if "is not set for hub" in e]
    line = line_of(layered / "fleet.yaml", "{secret: tok}")
    assert sorted(e.split("for hub ")[1].split(";")[0] for e in unset) == ["'uni'", "'uni-staging'"]
    assert all(
        e.startswith(f"fleet.yaml:{line}:11: kubernetes.extra_values.ingress.annotations.") for e in unset
    )
    config, _ = load_fleet_files(layered)
    assert config is not None and config.hubs["lab"].kubernetes is None

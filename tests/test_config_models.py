"""The models and the effective hub settings (defaults merging, source positions)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fleet_helpers import DEMO, copy_demo_without_front_door, edit
from hubfleet.config.defaults import merge_defaults
from hubfleet.config.models import Culling, FleetSettings, Hub, Resources
from hubfleet.config.models_auth import DummyAuth, NativeAuth
from hubfleet.config.validate import load_fleet, validate_fleet


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    root = tmp_path / "fleet"
    copy_demo_without_front_door(root)
    return root


def test_demo_fleet_loads() -> None:
    config = load_fleet(DEMO)
    assert config.settings.name == "demo"
    assert sorted(config.hubs) == ["hackweek", "hackweek-staging", "uni-a", "uni-a-staging"]
    assert sorted(config.communities) == ["hackweek", "uni-a"]
    assert list(config.clusters) == ["local"]
    assert config.hub_files["uni-a"] == Path("communities/uni-a/hubs/prod.yaml")
    assert [h.name for h in config.local_hubs()] == list(config.hubs)


def test_defaults_merge_per_field_and_hub_wins() -> None:
    config = load_fleet(DEMO)
    uni = config.hubs["uni-a"]
    assert uni.resources == Resources(memory_limit="2G", cpu_limit=1.0)  # memory from hub, cpu from defaults
    hack = config.hubs["hackweek"]
    assert hack.culling == Culling(timeout=1800)
    assert hack.default_ui == "classic"
    assert config.hubs["uni-a-staging"].default_ui == "lab"


def test_auth_is_replaced_whole(demo: Path) -> None:
    fleet = demo / "fleet.yaml"
    edit(
        fleet,
        "defaults:\n",
        "defaults:\n  auth:\n    type: native\n    admin_users: [ada]\n    open_signup: true\n",
    )
    hub = demo / "communities/uni-a/hubs/prod.yaml"
    hub.write_text(hub.read_text().replace("auth:\n  type: native\n  admin_users: [grace]\n", ""))
    config = load_fleet(demo)
    assert config.hubs["uni-a"].auth == NativeAuth(type="native", admin_users=["ada"], open_signup=True)
    assert config.hubs["uni-a-staging"].auth.admin_users == ["grace"]  # its own auth, nothing merged
    assert isinstance(config.hubs["uni-a-staging"].auth, DummyAuth)


def test_merge_defaults_rules() -> None:
    defaults = {
        "resources": {"cpu_limit": 1, "memory_limit": "1G"},
        "auth": {"type": "dummy"},
        "max_users": 5,
    }
    hub = {"resources": {"memory_limit": "2G"}, "auth": {"type": "native"}}
    assert merge_defaults(defaults, hub) == {
        "resources": {"cpu_limit": 1, "memory_limit": "2G"},
        "auth": {"type": "native"},
        "max_users": 5,
    }
    assert merge_defaults({}, hub) is hub
    assert merge_defaults(defaults, ["not", "a", "mapping"]) == ["not", "a", "mapping"]


def test_locate_hub_file_then_defaults_then_first_key() -> None:
    config, errors = validate_fleet(DEMO)
    assert errors == []
    assert config.locate("uni-a", "resources.memory_limit") == ("communities/uni-a/hubs/prod.yaml", 13, 3)
    cpu_line = (DEMO / "fleet.yaml").read_text().splitlines().index("    cpu_limit: 1") + 1
    assert config.locate("uni-a", "resources.cpu_limit") == ("fleet.yaml", cpu_line, 5)
    assert config.locate("uni-a", "auth.admin_users") == ("communities/uni-a/hubs/prod.yaml", 10, 3)
    assert config.locate("uni-a", "extra_config") == ("communities/uni-a/hubs/prod.yaml", 2, 1)
    assert config.locate("uni-a", "domain") == ("communities/uni-a/hubs/prod.yaml", 15, 1)
    assert config.locate("uni-a", "auth.allowed_users") == ("communities/uni-a/hubs/prod.yaml", 8, 1)


def test_models_forbid_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        FleetSettings.model_validate({"name": "x", "colour": "blue"})
    with pytest.raises(ValidationError):
        Hub.model_validate({"name": "x", "community": "c", "cluster": "l", "stage": "prod", "prot": 1})


def test_secret_password_is_hidden() -> None:
    auth = DummyAuth(type="dummy", password="s3cret", admin_users=["a"])
    assert "s3cret" not in repr(auth)
    assert auth.password.get_secret_value() == "s3cret"


def test_yaml_1_2_semantics(demo: Path) -> None:
    """Values load as ruamel.yaml (YAML 1.2) reads them, whichever parser ran: `yes` is text, `0o177`
    is 127."""
    hub = demo / "communities/uni-a/hubs/prod.yaml"
    text = hub.read_text().replace("display_name: University A", "display_name: yes")
    hub.write_text(text.replace("max_users: 100", "max_users: 0o177"))
    config = load_fleet(demo)
    assert config.hubs["uni-a"].display_name == "yes"
    assert config.hubs["uni-a"].max_users == 127


def test_dates_are_not_text(demo: Path) -> None:
    hub = demo / "communities/uni-a/hubs/prod.yaml"
    hub.write_text(hub.read_text().replace("display_name: University A", "display_name: 2026-01-01"))
    _, errors = validate_fleet(demo)
    assert [str(e) for e in errors] == [
        "communities/uni-a/hubs/prod.yaml:3:15: display_name: expected text, got a date; quote it"
    ]


def test_yml_suffix_and_flow_style(demo: Path) -> None:
    (demo / "communities/uni-a/hubs/staging.yaml").rename(demo / "communities/uni-a/hubs/staging.yml")
    cluster = demo / "clusters/local.yaml"
    cluster.write_text("{name: local, kind: local}\n")
    config = load_fleet(demo)
    assert "uni-a-staging" in config.hubs
    assert config.hub_files["uni-a-staging"] == Path("communities/uni-a/hubs/staging.yml")

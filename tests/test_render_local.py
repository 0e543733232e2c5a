"""The generated jupyterhub_config.py: loaded by traitlets exactly as JupyterHub loads it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from traitlets.config import PyFileConfigLoader

from fleet_helpers import copy_demo_fleet, drop_section
from hubfleet.backends.local import LocalBackend, PreparedHub, hub_dir
from hubfleet.config.validate import load_fleet
from hubfleet.render.common import DUMMY_PASSWORD_ENV
from hubfleet.render.local import CHECK_USERNAME, CONTROL_TOKEN_ENV, OPERATOR_TOKEN_ENV


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    root = copy_demo_fleet(tmp_path / "fleet")
    return LocalBackend(load_fleet(root), tmp_path / "state")


def load_config(prepared: PreparedHub, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Execute the config with traitlets, with the secrets the supervisor would put in the environment."""
    path = prepared.config_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(prepared.rendered)
    monkeypatch.setenv(CONTROL_TOKEN_ENV, "control-secret-value")
    monkeypatch.setenv(OPERATOR_TOKEN_ENV, "operator-secret-value")
    monkeypatch.setenv(DUMMY_PASSWORD_ENV, "demo-staging")
    return PyFileConfigLoader(path.name, str(path.parent)).load_config()


def test_staging_hub_config(backend: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = backend.fleet.hubs["uni-a-staging"]
    prepared = backend.prepare(hub)
    config = load_config(prepared, monkeypatch)

    assert config.JupyterHub.ip == "127.0.0.1"
    assert config.JupyterHub.port == hub.port
    assert config.JupyterHub.hub_ip == "127.0.0.1"
    assert config.JupyterHub.cleanup_servers is False
    assert config.JupyterHub.authenticator_class == "dummy"
    assert config.DummyAuthenticator.password == "demo-staging"
    # the community admin plus the fleet's staff member with a dummy username
    assert sorted(config.DummyAuthenticator.admin_users) == ["ada", "grace"]
    if os.geteuid() == 0:  # each user's server as their own account, through the daemon's broker
        assert config.JupyterHub.spawner_class == "hubfleet.isolation.spawner.BrokerSpawner"
        assert config.BrokerSpawner.socket_path.startswith("/run/hubfleet/")
    assert str(prepared.data_dir) in config.JupyterHub.db_url
    assert not prepared.data_dir.is_relative_to(backend.state_dir)  # hub accounts cannot enter the state dir
    assert config.Spawner.default_url == "/lab"
    assert config.Spawner.mem_limit == "1G"  # inherited from fleet.yaml defaults
    services = {s["name"]: s for s in config.JupyterHub.services}
    assert services["hubfleet"]["api_token"] == "control-secret-value"
    assert "jupyterhub_idle_culler" in services["idle-culler"]["command"]
    assert "--timeout=3600" in services["idle-culler"]["command"]
    roles = {r["name"]: r for r in config.JupyterHub.load_roles}
    assert f"admin:users!user={CHECK_USERNAME}" in roles["hubfleet"]["scopes"]
    assert "admin:users" not in roles["hubfleet"]["scopes"]
    assert "shutdown" in roles["hubfleet-operator"]["scopes"]


def test_prod_hub_config(backend: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = backend.fleet.hubs["hackweek"]
    config = load_config(backend.prepare(hub), monkeypatch)
    assert config.JupyterHub.authenticator_class == "nativeauthenticator.NativeAuthenticator"
    assert config.NativeAuthenticator.open_signup is True
    assert config.JupyterHub.active_server_limit == 200
    assert config.Spawner.default_url == "/tree"
    assert "--timeout=1800" in {s["name"]: s for s in config.JupyterHub.services}["idle-culler"]["command"]
    assert config.JupyterHub.shutdown_on_logout is False  # from extra_config, appended last


def test_rendered_config_holds_no_secret(backend: LocalBackend) -> None:
    for hub in backend.fleet.hubs.values():
        prepared = backend.prepare(hub)
        text = prepared.rendered
        assert "demo-staging" not in text
        for secret in (prepared.env[CONTROL_TOKEN_ENV], prepared.env[OPERATOR_TOKEN_ENV]):
            assert secret not in text
            assert secret not in repr(prepared)


def test_config_hash_is_stable_and_tracks_changes(backend: LocalBackend) -> None:
    hub = backend.fleet.hubs["uni-a"]
    first = backend.config_hash(hub)
    assert backend.config_hash(hub) == first  # ports and tokens are kept, so the hash is stable
    changed = hub.model_copy(update={"max_users": 7})
    assert backend.config_hash(changed) != first


def test_single_account_mode_runs_servers_with_the_simple_spawner(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBFLEET_ISOLATION", "single")
    prepared = backend.prepare(backend.fleet.hubs["uni-a-staging"])
    config = load_config(prepared, monkeypatch)
    # the demo's uni-a hubs offer Python and R: the simple spawner with environments
    assert config.JupyterHub.spawner_class == "hubfleet.isolation.spawner.LocalEnvironmentSpawner"
    homes = backend.layout.homes("uni-a-staging")
    assert config.LocalEnvironmentSpawner.home_dir_template == str(homes / "{username}")
    assert not prepared.blocked  # a staging hub
    plain = backend.prepare(backend.fleet.hubs["hackweek-staging"])  # no environments
    assert load_config(plain, monkeypatch).JupyterHub.spawner_class == "simple"
    assert "user_database" in plain.blocked  # a database per user needs accounts of their own (root)
    prod = backend.prepare(backend.fleet.hubs["uni-a"])
    assert not prod.blocked  # the demo fleet opts in: `isolation: single_account_prod: true`


def test_prod_hubs_refuse_single_account_mode_without_the_opt_in(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBFLEET_ISOLATION", "single")
    fleet_yaml = backend.fleet.root / "fleet.yaml"
    fleet_yaml.write_text(drop_section(fleet_yaml.read_text(), "isolation"))
    fleet = load_fleet(backend.fleet.root)
    prepared = LocalBackend(fleet, backend.state_dir).prepare(fleet.hubs["uni-a"])
    assert "single_account_prod: true" in prepared.blocked and "as root" in prepared.blocked
    assert not LocalBackend(fleet, backend.state_dir).prepare(fleet.hubs["uni-a-staging"]).blocked


def test_internal_ports_are_kept_across_renders(backend: LocalBackend) -> None:
    hub = backend.fleet.hubs["uni-a"]
    first = backend.runtime(hub)
    again = LocalBackend(backend.fleet, backend.state_dir).runtime(hub)
    assert (first.hub_port, first.proxy_api_port) == (again.hub_port, again.proxy_api_port)
    assert len({first.hub_port, first.proxy_api_port, hub.port}) == 3


def test_tokens_file_is_private(backend: LocalBackend) -> None:
    prepared = backend.prepare(backend.fleet.hubs["uni-a"])
    assert prepared.name == "uni-a"
    assert (hub_dir(backend.state_dir, "uni-a") / "tokens.json").stat().st_mode & 0o077 == 0

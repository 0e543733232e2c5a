"""Users' groups from the sign-in provider, for environments limited to groups (both backends).

The rendered settings are loaded by traitlets as JupyterHub loads them and OAuthenticator 17.4's own classes
are built from them; their own `get_user_groups` / `_apply_managed_groups` turn a login's auth state into
the groups JupyterHub syncs. GitHub has no provider here, so its auth state is the shape GitHub's
/user/teams answers (a list of teams, each with `slug` and `organization.login`); a real OIDC login with a
groups claim is in test_auth_groups_oidc.py.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config, PyFileConfigLoader

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.config.models_auth import CILogonAuth, GitHubAuth, OIDCAuth
from hubfleet.config.models_environments import Environment
from hubfleet.config.validate import load_fleet, validate_fleet
from hubfleet.render.common import (
    CLIENT_SECRET_ENV,
    GITHUB_TEAMS_AS_GROUPS,
    auth_config,
    environments_use_groups,
)
from hubfleet.render.kubernetes import render_z2jh_values
from hubfleet.render.local import (
    CONTROL_TOKEN_ENV,
    OPERATOR_TOKEN_ENV,
    LocalRuntime,
    render_jupyterhub_config,
)

HERE = Path(__file__).resolve().parent
K8S = HERE / "fixtures" / "k8s-fleet"
DEMO = HERE.parent / "examples" / "demo-fleet"
SECRET = {"secret": "client_secret"}
TEAMS = [
    {"slug": "gpu-users", "name": "GPU users", "organization": {"login": "research-lab", "id": 1}},
    {"slug": "hub-users", "name": "Hub users", "organization": {"login": "research-lab", "id": 1}},
    {"slug": "maintainers", "organization": {"login": "other-org"}},
]
GPU_ONLY = [
    Environment.model_validate({"slug": "cpu", "display_name": "CPU"}),
    Environment.model_validate(
        {
            "slug": "big",
            "display_name": "Big",
            "options": {
                "size": {
                    "display_name": "Size",
                    "choices": {
                        "s": {"display_name": "S"},
                        "gpu": {"display_name": "GPU", "groups": ["research-lab:gpu-users"]},
                    },
                }
            },
        }
    ),
]


@pytest.fixture(scope="module")
def k8s() -> FleetConfig:
    return load_fleet(K8S)


def z2jh_config(fleet: FleetConfig, hub: Hub) -> Config:
    """hub.config as z2jh applies it, then the hub's extraConfig entries in z2jh's (sorted) order."""
    values = render_z2jh_values(fleet, hub)
    c = Config()
    for section, traits in values["hub"]["config"].items():
        for trait, value in traits.items():
            setattr(getattr(c, section), trait, value)
    c.KubeSpawner.profile_list = values["singleuser"].get("profileList", [])
    c.GitHubOAuthenticator.client_secret = "placeholder"
    for _key, code in sorted(values["hub"].get("extraConfig", {}).items()):
        if "_hubfleet_oidc_discovery" not in code:  # reads the issuer at start; not reachable here
            # z2jh runs extraConfig with its helpers in scope; get_name gives a resource's name in the release
            exec(code, {"c": c, "get_name": lambda name: name})
    return c


def groups_of(authenticator: Any, auth_state: dict[str, Any]) -> list[str]:
    model = {"name": "ada", "admin": None, "auth_state": auth_state}
    return asyncio.run(authenticator._apply_managed_groups(model))["groups"]


def test_github_teams_become_groups_on_kubernetes(k8s: FleetConfig) -> None:
    from oauthenticator.github import GitHubOAuthenticator

    hub = k8s.hubs["lab"]
    assert environments_use_groups(hub)
    values = render_z2jh_values(k8s, hub)
    traits = values["hub"]["config"]["GitHubOAuthenticator"]
    assert traits["manage_groups"] is True and traits["populate_teams_in_auth_state"] is True
    assert traits["scope"] == ["read:org"]
    assert values["hub"]["extraConfig"]["hubfleet-01-github"] == GITHUB_TEAMS_AS_GROUPS
    authenticator = GitHubOAuthenticator(config=z2jh_config(k8s, hub))
    assert authenticator.manage_groups and authenticator.populate_teams_in_auth_state
    assert sorted(groups_of(authenticator, {"teams": TEAMS})) == [
        "other-org:maintainers",
        "research-lab:gpu-users",
        "research-lab:hub-users",
    ]
    assert groups_of(authenticator, {"teams": []}) == []
    assert groups_of(authenticator, {}) == []


def test_no_group_management_without_groups_in_environments(k8s: FleetConfig) -> None:
    """A GitHub hub whose environments name no group keeps JupyterHub's groups to its admins."""
    hub = k8s.hubs["lab"].model_copy(update={"environments": GPU_ONLY[:1]})
    assert not environments_use_groups(hub)
    auth = auth_config(k8s, hub)
    assert "manage_groups" not in auth.traits and "populate_teams_in_auth_state" not in auth.traits
    assert auth.startup_code == ""
    assert auth.traits["scope"] == ["read:org"]  # for allowed_organizations' teams
    plain = GitHubAuth(
        type="github", client_id="Iv1.x", client_secret=SECRET, admin_users=["a"], allow_all=True
    )
    assert "scope" not in auth_config(k8s, hub.model_copy(update={"auth": plain})).traits
    with_groups = hub.model_copy(update={"auth": plain, "environments": GPU_ONLY})
    traits = auth_config(k8s, with_groups).traits
    assert traits["scope"] == ["read:org"] and traits["manage_groups"] is True


def test_oidc_groups_claim_on_kubernetes(k8s: FleetConfig) -> None:
    from oauthenticator.generic import GenericOAuthenticator

    hub = k8s.hubs["astro-staging"]
    traits = render_z2jh_values(k8s, hub)["hub"]["config"]["GenericOAuthenticator"]
    assert traits["manage_groups"] is True
    assert traits["auth_state_groups_key"] == "oauth_user.groups"
    authenticator = GenericOAuthenticator(config=z2jh_config(k8s, hub))
    state = {"oauth_user": {"preferred_username": "vera", "groups": ["astro-members", "astro-gpu"]}}
    assert sorted(groups_of(authenticator, state)) == ["astro-gpu", "astro-members"]
    # no allow-by-group, but an environment limited to a group: groups are managed, nobody is let in by them
    auth = OIDCAuth(
        type="oidc",
        issuer="https://login.example.org/realms/x",
        client_id="hub",
        client_secret=SECRET,
        admin_users=["vera"],
        allow_all=True,
        groups_claim="roles",
    )
    traits = auth_config(k8s, hub.model_copy(update={"auth": auth})).traits
    assert traits["manage_groups"] is True and traits["auth_state_groups_key"] == "oauth_user.roles"
    assert "allowed_groups" not in traits
    bare = hub.model_copy(update={"auth": auth, "environments": GPU_ONLY[:1]})
    assert "manage_groups" not in auth_config(k8s, bare).traits


def test_github_teams_become_groups_on_local_hubs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The local hub's jupyterhub_config.py, loaded by traitlets as JupyterHub does."""
    from oauthenticator.github import GitHubOAuthenticator

    fleet = load_fleet(DEMO)
    auth = GitHubAuth(
        type="github",
        client_id="Iv1.abc",
        client_secret=SECRET,
        admin_users=["grace"],
        allowed_organizations=["research-lab"],
    )
    hub = fleet.hubs["uni-a-staging"].model_copy(update={"auth": auth, "environments": GPU_ONLY})
    runtime = LocalRuntime(
        tmp_path / "hub", tmp_path / "homes", 18999, 18998, tmp_path / "bin", as_root=False
    )
    path = tmp_path / "jupyterhub_config.py"
    path.write_text(render_jupyterhub_config(fleet, hub, runtime))
    monkeypatch.setenv(CONTROL_TOKEN_ENV, "control")
    monkeypatch.setenv(OPERATOR_TOKEN_ENV, "operator")
    monkeypatch.setenv(CLIENT_SECRET_ENV, "the-client-secret")
    config = PyFileConfigLoader(path.name, str(path.parent)).load_config()
    authenticator = GitHubOAuthenticator(config=config)
    assert authenticator.manage_groups and authenticator.populate_teams_in_auth_state
    assert "research-lab:gpu-users" in groups_of(authenticator, {"teams": TEAMS})


def test_cilogon_groups_claim(tmp_path: Path) -> None:
    """CILogon's user info is under `cilogon_user`; groups only with `groups_claim` and group-limited
    environments."""
    from oauthenticator.cilogon import CILogonOAuthenticator

    fleet = load_fleet(HERE / "fixtures" / "real-hubs")
    hub = fleet.hubs["uni-west"]
    assert isinstance(hub.auth, CILogonAuth)
    assert "manage_groups" not in auth_config(fleet, hub).traits
    auth = hub.auth.model_copy(update={"groups_claim": "isMemberOf"})
    assert "manage_groups" not in auth_config(fleet, hub.model_copy(update={"auth": auth})).traits
    grouped = hub.model_copy(update={"auth": auth, "environments": GPU_ONLY})
    traits = auth_config(fleet, grouped).traits
    assert traits["manage_groups"] is True
    assert traits["auth_state_groups_key"] == "cilogon_user.isMemberOf"
    c = Config()
    for trait, value in traits.items():
        setattr(c.CILogonOAuthenticator, trait, value)
    authenticator = CILogonOAuthenticator(config=c)
    state = {"cilogon_user": {"eppn": "ana@uni.edu", "isMemberOf": ["CO:COU:gpu-users:members:active"]}}
    assert groups_of(authenticator, state) == ["CO:COU:gpu-users:members:active"]


# --------------------------------------------------------------------------- validation


def hub_with(root: Path, rel: str, text: str) -> list[str]:
    path = root / rel
    path.write_text(path.read_text() + text)
    _, errors = validate_fleet(root)
    return [str(e).replace(str(root) + "/", "") for e in errors]


GROUPED = """\
environments:
- slug: cpu
  display_name: CPU
- slug: big
  display_name: Big
  options:
    size:
      display_name: Size
      choices:
        s: {{display_name: S}}
        gpu: {{display_name: GPU, groups: [{group}]}}
"""


def test_groups_need_a_source(tmp_path: Path) -> None:
    root = tmp_path / "k8s"
    shutil.copytree(K8S, root)
    # a GitHub hub: teams only
    errors = hub_with(root, "communities/lab/hubs/staging.yaml", "")
    assert errors == []
    lab = root / "communities/lab/hubs/prod.yaml"
    lab.write_text(lab.read_text().replace('groups: ["research-lab:gpu-users"]', "groups: [gpu-users]"))
    errors = hub_with(root, "communities/lab/hubs/prod.yaml", "")
    assert len(errors) == 1 and errors[0].startswith("communities/lab/hubs/prod.yaml:"), errors
    assert errors[0].endswith(
        "environments[0].options.size.choices.gpu.groups: 'gpu-users' is no GitHub team: a GitHub hub's "
        "groups are its users' teams, written org:team (such as research-lab:gpu-users)"
    )
    # a native hub: its own groups
    physics = root / "communities/physics/hubs/prod.yaml"
    physics.write_text(physics.read_text().replace("groups: [gpu-class]", "groups: [gpu-klass]"))
    errors = hub_with(root, "communities/physics/hubs/prod.yaml", "")
    assert any(
        "environments[2].groups: 'gpu-klass' is not one of the hub's groups (auth.groups: gpu-class); "
        "define it there with its members" in e
        for e in errors
    ), errors


def test_cilogon_groups_need_the_claim(tmp_path: Path) -> None:
    root = tmp_path / "real"
    shutil.copytree(HERE / "fixtures" / "real-hubs", root)
    rel = "communities/uni-west/hubs/prod.yaml"
    errors = hub_with(root, rel, GROUPED.format(group="gpu-users"))
    assert len(errors) == 1 and errors[0].endswith(
        "environments[1].options.size.choices.gpu.groups: group 'gpu-users' needs the users' groups from "
        "CILogon: set auth.groups_claim (CILogon sends them as isMemberOf when the IdP releases them)"
    ), errors
    hub = root / rel
    hub.write_text(hub.read_text().replace("auth:\n", "auth:\n  groups_claim: isMemberOf\n", 1))
    assert hub_with(root, rel, "") == []

"""Integration: a user's JupyterHub groups come from the OpenID Connect provider's groups claim at each login,
and the environment limited to a group is open to its members only.

Real, as in test_auth_oidc.py: a JupyterHub started by `hubfleet up --detach` from a fleet file this test
writes (GenericOAuthenticator, endpoints from the provider's discovery document), the `oidc-provider-mock`
provider in its own process (it lets the test choose each user's claims, here `groups`), the whole
authorization-code flow over HTTP, and the hub's REST API. The hub allows everyone who signs in
(`allow_all`) and does not filter by group: its groups are managed only because an environment names one
(render/common.py `environments_use_groups`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from fleet_helpers import copy_demo_fleet, daemon_status, free_ports, hubfleet, running_fleet
from oidc_helpers import Provider, browser, log_in, new_identity, oidc_provider

pytestmark = pytest.mark.integration

HUB = "uni-a-groups"
GROUP = "gpu-users"


@dataclass
class Env:
    root: Path
    oidc: Provider
    url: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("groups")
    with contextlib.ExitStack() as stack:
        oidc = stack.enter_context(oidc_provider(base / "logs"))
        root = copy_demo_fleet(base / "fleet", keep={"communities/uni-a/hubs/staging.yaml"})
        (root / "communities/uni-a/hubs/staging.yaml").unlink()
        identity = base / "ada.txt"
        fleet_file = root / "fleet.yaml"
        fleet_file.write_text(
            fleet_file.read_text().replace(
                "      dummy: ada\n", f"      dummy: ada\n    age_recipient: {new_identity(identity)}\n"
            )
        )
        (port,) = free_ports(1)
        url = f"http://127.0.0.1:{port}"
        client_id, client_secret = oidc.register_client([url + "/hub/oauth_callback"])
        hub = {
            "name": HUB,
            "community": "uni-a",
            "cluster": "local",
            "stage": "staging",
            "port": port,
            "culling": {"enabled": False},
            "auth": {
                "type": "oidc",
                "issuer": oidc.url,
                "client_id": client_id,
                "client_secret": {"secret": "client_secret"},
                "username_claim": "preferred_username",
                "groups_claim": "groups",
                "admin_users": ["grace"],
                "allow_all": True,
            },
            "environments": [
                {"slug": "python", "display_name": "Python", "default": True},
                {"slug": "big", "display_name": "Big machine", "groups": [GROUP]},
            ],
        }
        (root / "communities/uni-a/hubs/groups.yaml").write_text(yaml.safe_dump(hub, sort_keys=False))
        secrets_env = {"HUBFLEET_AGE_IDENTITY": str(identity)}
        hubfleet(
            "secrets",
            "set",
            HUB,
            "client_secret",
            fleet=root,
            env=secrets_env,
            input=client_secret,
            check=True,
        )
        stack.enter_context(running_fleet(root, secrets_env))
        yield Env(root, oidc, url)


def admin_api(env: Env) -> httpx.Client:
    token = hubfleet("token", HUB, fleet=env.root, check=True).stdout.strip()
    assert daemon_status(env.root)["hubs"][HUB]["url"] == env.url
    return httpx.Client(base_url=env.url, headers={"Authorization": f"token {token}"}, timeout=30)


def sign_in(env: Env, sub: str) -> None:
    with browser(env.url, env.oidc) as client:
        answer = log_in(client, env.oidc, sub)
        assert answer.status_code == 302, (answer.status_code, answer.text[-2000:])
        assert "jupyterhub-hub-login" in client.cookies


def test_groups_claim_becomes_the_users_groups_at_each_login(env: Env) -> None:
    env.oidc.set_user("sub-bob", preferred_username="bob", groups=[GROUP, "staff"])
    env.oidc.set_user("sub-carol", preferred_username="carol", groups=["chemistry"])
    sign_in(env, "sub-bob")
    sign_in(env, "sub-carol")
    with admin_api(env) as api:
        assert sorted(api.get("/hub/api/users/bob").json()["groups"]) == sorted([GROUP, "staff"])
        assert api.get("/hub/api/users/carol").json()["groups"] == ["chemistry"]
        assert sorted(api.get(f"/hub/api/groups/{GROUP}").json()["users"]) == ["bob"]
        # the provider drops bob from the group: his next login drops him from the hub's group
        env.oidc.set_user("sub-bob", preferred_username="bob", groups=["staff"])
        sign_in(env, "sub-bob")
        assert api.get("/hub/api/users/bob").json()["groups"] == ["staff"]
        assert api.get(f"/hub/api/groups/{GROUP}").json()["users"] == []


def test_environment_of_a_group_refused_to_others(env: Env) -> None:
    env.oidc.set_user("sub-dave", preferred_username="dave", groups=["chemistry"])
    sign_in(env, "sub-dave")
    with admin_api(env) as api:
        answer = api.post("/hub/api/users/dave/server", json={"environment": "big"})
        assert answer.status_code == 400, answer.text
        assert f"environment 'big' is only for members of group(s) {GROUP}" in answer.json()["message"]
        assert api.get("/hub/api/users/dave").json()["servers"] == {}

"""OAuth auth types rendered for local hubs (jupyterhub_config.py) and kubernetes hubs (z2jh values).

The local configs are executed by traitlets exactly as JupyterHub loads them, and the authenticator classes
of OAuthenticator are instantiated from them, so a trait OAuthenticator does not know or refuses fails here.
GitHub has no provider here: its hubs are tested for rendering and validation only (no login).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from traitlets.config import Config, PyFileConfigLoader

from fleet_helpers import free_ports
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Hub
from hubfleet.config.models_auth import CILogonAuth, GitHubAuth, OIDCAuth
from hubfleet.config.validate import load_fleet
from hubfleet.render.common import CLIENT_SECRET_ENV, auth_config
from hubfleet.render.local import (
    CONTROL_TOKEN_ENV,
    OPERATOR_TOKEN_ENV,
    LocalRuntime,
    render_jupyterhub_config,
)

HERE = Path(__file__).resolve().parent
DEMO = HERE.parent / "examples" / "demo-fleet"
SECRET = {"secret": "client_secret"}
IDP = "https://idp.uni.edu/idp/shibboleth"


@pytest.fixture(scope="module")
def fleet() -> FleetConfig:
    return load_fleet(DEMO)


class _Discovery(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path != "/realm/.well-known/openid-configuration":
            self.send_error(404)
            return
        base = f"http://127.0.0.1:{self.server.server_port}/realm"
        body = json.dumps(
            {
                "issuer": base,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "userinfo_endpoint": f"{base}/userinfo",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    """A discovery document on loopback (just the document: login flows are in test_auth_oidc.py)."""
    server = HTTPServer(("127.0.0.1", 0), _Discovery)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/realm"
    server.shutdown()
    server.server_close()


def with_auth(fleet: FleetConfig, auth: object, name: str = "uni-a-staging") -> Hub:
    return fleet.hubs[name].model_copy(update={"auth": auth})


def load_local(fleet: FleetConfig, hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    runtime = LocalRuntime(
        tmp_path / "hub", tmp_path / "homes", 18999, 18998, tmp_path / "bin", as_root=False
    )
    path = tmp_path / "jupyterhub_config.py"
    path.write_text(render_jupyterhub_config(fleet, hub, runtime))
    monkeypatch.setenv(CONTROL_TOKEN_ENV, "control")
    monkeypatch.setenv(OPERATOR_TOKEN_ENV, "operator")
    monkeypatch.setenv(CLIENT_SECRET_ENV, "the-client-secret")
    return PyFileConfigLoader(path.name, str(path.parent)).load_config()


def oidc(issuer: str, **extra: object) -> OIDCAuth:
    return OIDCAuth(type="oidc", issuer=issuer, client_id="hub-client", client_secret=SECRET, **extra)


def test_oidc_local_config(
    fleet: FleetConfig, issuer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oauthenticator.generic import GenericOAuthenticator

    hub = with_auth(
        fleet, oidc(issuer, admin_users=["grace"], allowed_groups=["physics"], username_claim="sub")
    )
    config = load_local(fleet, hub, tmp_path, monkeypatch)
    assert config.JupyterHub.authenticator_class == "oauthenticator.generic.GenericOAuthenticator"
    auth = GenericOAuthenticator(config=config)
    assert auth.authorize_url == f"{issuer}/authorize"
    assert auth.token_url == f"{issuer}/token"
    assert auth.userdata_url == f"{issuer}/userinfo"
    assert auth.client_id == "hub-client"
    assert auth.client_secret == "the-client-secret"
    # the demo fleet's front door serves this hub at a path of its domain: the callback is that public URL
    assert hub.name == "uni-a-staging"
    assert auth.oauth_callback_url == "https://hubs.localhost:18443/uni-a-staging/hub/oauth_callback"
    assert auth.username_claim == "sub"
    assert auth.scope == ["openid", "profile", "email"]
    assert auth.manage_groups is True
    assert auth.auth_state_groups_key == "oauth_user.groups"
    assert auth.allowed_groups == {"physics"}
    assert auth.allow_all is False
    assert auth.admin_users == {"grace"}  # no operator of the demo fleet has an oidc username


def test_oidc_unreachable_issuer_names_it(
    fleet: FleetConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (port,) = free_ports(1)
    hub = with_auth(fleet, oidc(f"http://127.0.0.1:{port}", admin_users=["grace"], allow_all=True))
    with pytest.raises(RuntimeError) as info:
        load_local(fleet, hub, tmp_path, monkeypatch)
    message = str(info.value)
    assert message.startswith(
        f"hubfleet: cannot read the OpenID Connect discovery document of issuer http://127.0.0.1:{port} "
        f"(http://127.0.0.1:{port}/.well-known/openid-configuration): "
    )
    assert message.endswith(
        "check auth.issuer in the hub file and that the provider is reachable from the hub"
    )


def test_rendering_is_offline_and_deterministic(fleet: FleetConfig, tmp_path: Path) -> None:
    (port,) = free_ports(1)  # nothing listens there: rendering must not try to read the issuer
    hub = with_auth(fleet, oidc(f"http://127.0.0.1:{port}", admin_users=["grace"], allow_all=True))
    runtime = LocalRuntime(tmp_path, tmp_path / "homes", 1, 2, tmp_path, as_root=False)
    assert render_jupyterhub_config(fleet, hub, runtime) == render_jupyterhub_config(fleet, hub, runtime)


def test_cilogon_local_config(fleet: FleetConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from oauthenticator.cilogon import CILogonOAuthenticator

    auth = CILogonAuth(
        type="cilogon",
        client_id="cilogon:/client_id/abc",
        client_secret=SECRET,
        admin_users=["grace"],
        allowed_users=["bob"],
        allowed_idps={
            IDP: {"username_claim": "eppn", "strip_domain": "uni.edu", "allowed_domains": ["uni.edu"]},
            "http://github.com/login/oauth/authorize": {"username_claim": "preferred_username"},
        },
        cilogon_host="test.cilogon.org",
    )
    config = load_local(fleet, with_auth(fleet, auth), tmp_path, monkeypatch)
    assert config.JupyterHub.authenticator_class == "oauthenticator.cilogon.CILogonOAuthenticator"
    authenticator = CILogonOAuthenticator(config=config)
    assert authenticator.idps == {
        IDP: {
            "username_derivation": {
                "username_claim": "eppn",
                "action": "strip_idp_domain",
                "domain": "uni.edu",
            },
            "allowed_domains": ["uni.edu"],
        },
        "http://github.com/login/oauth/authorize": {
            "username_derivation": {"username_claim": "preferred_username"},
            "allowed_domains": [],
            "allow_all": True,
        },
    }
    assert authenticator.authorize_url == "https://test.cilogon.org/authorize"
    assert authenticator.client_secret == "the-client-secret"
    assert authenticator.allowed_users == {"bob"}
    assert authenticator.admin_users == {"grace"}


def test_github_local_config(fleet: FleetConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering only: there is no GitHub here to log in with."""
    from oauthenticator.github import GitHubOAuthenticator

    auth = GitHubAuth(
        type="github",
        client_id="Iv1.abc",
        client_secret=SECRET,
        admin_users=["grace"],
        allowed_organizations=["physics-dept:hub-users", "astro-lab"],
    )
    config = load_local(fleet, with_auth(fleet, auth), tmp_path, monkeypatch)
    authenticator = GitHubOAuthenticator(config=config)
    assert authenticator.allowed_organizations == {"physics-dept:hub-users", "astro-lab"}
    assert authenticator.scope == ["read:org"]
    assert authenticator.client_secret == "the-client-secret"
    assert authenticator.oauth_callback_url.endswith("/hub/oauth_callback")


def test_client_secret_never_in_rendered_config(fleet: FleetConfig, tmp_path: Path) -> None:
    hub = with_auth(fleet, oidc("https://id.example.org", admin_users=["grace"], allow_all=True))
    text = render_jupyterhub_config(
        fleet, hub, LocalRuntime(tmp_path, tmp_path / "homes", 1, 2, tmp_path, as_root=False)
    )
    assert f"c.GenericOAuthenticator.client_secret = os.environ.get({CLIENT_SECRET_ENV!r}, '')" in text
    assert auth_config(fleet, hub).secrets[0].value.secret == "client_secret"


# --------------------------------------------------------------------------- kubernetes (z2jh values)

K8S_FIXTURE = HERE / "fixtures" / "k8s-fleet"
K8S_IDENTITY = HERE / "fixtures" / "k8s-fleet.age-identity.txt"
"""Test-only identity the fixture's secrets files are encrypted to."""


@pytest.fixture(scope="module")
def k8s() -> FleetConfig:
    return load_fleet(K8S_FIXTURE)


@pytest.mark.parametrize(
    ("hub_name", "class_name"),
    [
        ("astro-staging", "GenericOAuthenticator"),
        ("astro", "CILogonOAuthenticator"),
        ("lab", "GitHubOAuthenticator"),
    ],
)
def test_kubernetes_client_secret_only_in_secret_values(
    k8s: FleetConfig, hub_name: str, class_name: str
) -> None:
    from hubfleet.render.kubernetes import secret_placeholders, secret_values, values_yaml
    from hubfleet.secrets.store import SecretResolver

    hub = k8s.hubs[hub_name]
    value = f"{hub_name}-test-client-secret"
    public = values_yaml(k8s, hub)
    assert value not in public and "client_secret" not in public
    secrets = secret_values(k8s, hub, SecretResolver(k8s, K8S_IDENTITY))
    assert secrets == {"hub": {"config": {class_name: {"client_secret": value}}}}
    placeholder = secret_placeholders(k8s, hub)["hub"]["config"][class_name]["client_secret"]
    assert (
        placeholder == f"<set: the client secret of the {hub.auth.type} OAuth client `{hub.auth.client_id}`>"
    )
    # the callback URL registered at the provider is the hub's https URL
    assert f"oauth_callback_url: https://{hub.domain}/hub/oauth_callback" in public


def test_staff_are_admins_on_every_hub_of_their_auth_type(k8s: FleetConfig) -> None:
    """fleet.yaml gives Ada a username per auth type; `staff_admins: false` (hub lab) opts out."""
    from hubfleet.render.kubernetes import render_z2jh_values

    def admins(name: str) -> list[str]:
        config = render_z2jh_values(k8s, k8s.hubs[name])["hub"]["config"]
        (traits,) = [v for k, v in config.items() if k != "JupyterHub"]
        return traits["admin_users"]

    assert admins("astro-staging") == ["ada", "vera"]  # oidc: ada
    assert admins("astro") == ["ada@hubfleet.example", "vera"]  # cilogon: ada@hubfleet.example
    assert admins("physics") == ["ada", "marie"]  # native: ada
    assert admins("lab") == ["barbara-lab"]  # github hub with staff_admins: false


def test_staff_admins_on_local_hubs(
    fleet: FleetConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same on local hubs: an operator with an oidc username is an admin of every local oidc hub."""
    from hubfleet.config.models import Operator

    ada = fleet.settings.operators[0]
    staffed = ada.model_copy(update={"usernames": {**ada.usernames, "oidc": "ada-oidc"}})
    assert isinstance(staffed, Operator)
    fleet2 = FleetConfig(
        root=fleet.root,
        settings=fleet.settings.model_copy(update={"operators": [staffed]}),
        clusters=fleet.clusters,
        hubs=fleet.hubs,
    )
    hub = with_auth(fleet2, oidc("https://id.example.org", admin_users=["grace"], allow_all=True))
    assert auth_config(fleet2, hub).traits["admin_users"] == ["ada-oidc", "grace"]
    opted_out = with_auth(
        fleet2, oidc("https://id.example.org", admin_users=["grace"], allow_all=True, staff_admins=False)
    )
    assert auth_config(fleet2, opted_out).traits["admin_users"] == ["grace"]
    text = render_jupyterhub_config(
        fleet2, hub, LocalRuntime(tmp_path, tmp_path / "homes", 1, 2, tmp_path, as_root=False)
    )
    assert "c.GenericOAuthenticator.admin_users = ['ada-oidc', 'grace']" in text

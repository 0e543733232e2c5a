"""Integration: sign-on through a real OpenID Connect provider, for `type: oidc` and `type: cilogon` hubs.

What is real here (no mock stands in for any of it):
- JupyterHub 6 processes started by `hubfleet up --detach` from fleet files this test writes (the hub's
  jupyterhub_config.py is hubfleet's own rendering), with configurable-http-proxy and jupyter-server;
- OAuthenticator's GenericOAuthenticator (oidc; endpoints from the issuer's discovery document, read by the
  hub when it starts) and CILogonOAuthenticator (cilogon), doing the whole authorization-code flow;
- the OpenID Connect provider: `oidc-provider-mock` from PyPI (authlib underneath) in its own process on a
  loopback port, with client registration required so it checks the client id, the client secret (which
  reaches the hub only through `hubfleet secrets set` and the age-encrypted secrets file) and the
  redirect URI;
- HTTP everywhere: the test is the browser (httpx, cookies kept, redirects followed by hand): the hub's
  /hub/oauth_login, the provider's authorization form (submitted with the user's subject), the hub's
  /hub/oauth_callback, the spawn, and the user's server through the hub's own OAuth.
"mock" in the provider's name means it lets the tester choose who logs in and with which claims (stored with
its `PUT /users/<sub>` API); the protocol it speaks is the real one.

CILogon: CILogonOAuthenticator is configured only with `cilogon_host: 127.0.0.1:PORT`; from that it builds
https://HOST/authorize, /oauth2/token and /oauth2/userinfo, exactly as for cilogon.org. So the provider is
served over TLS with a certificate from a throwaway CA made by the test, at CILogon's paths, and the hub
trusts that CA through its `extra_config` (`http_request_kwargs = {"ca_certs": ...}`: certificate checks stay
on). This was preferred to overriding the three endpoint URLs because the hub then runs the CILogon
configuration an operator writes, unchanged. The provider sends the `idp`, `eppn` and `email` claims that
CILogon would; what it cannot show is CILogon's own IdP chooser (the `selected_idp` hint is sent and ignored).

GitHub hubs are covered by render and validation tests only (no GitHub here).

Both hubs run in one fleet under one `hubfleet up`; `hubfleet down` and a leak check run even on failure.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from fleet_helpers import copy_demo_fleet, daemon_status, free_ports, hubfleet, press_start, running_fleet
from oidc_helpers import (
    Provider,
    browser,
    follow,
    log_in,
    make_test_ca,
    new_identity,
    oidc_provider,
    wait_for_server,
)

pytestmark = pytest.mark.integration

OIDC_HUB = "uni-a-oidc"
CILOGON_HUB = "uni-a-cilogon"
UNI_IDP = "https://idp.uni-a.example/idp/shibboleth"
GOOGLE_IDP = "http://google.com/accounts/o8/id"
EVIL_IDP = "https://idp.elsewhere.example/idp/shibboleth"
STAFF = "ada-staff"
FORBIDDEN = "<h1>403 : "  # the hub's error page: status code, then the reason


@dataclass
class Env:
    root: Path
    oidc: Provider
    cilogon: Provider
    urls: dict[str, str]
    client_secrets: dict[str, str]


def write_fleet(
    root: Path, oidc: Provider, cilogon: Provider, identity: Path
) -> tuple[dict[str, str], dict[str, str]]:
    """A fleet with one oidc and one cilogon staging hub, clients registered at the providers, client secrets
    set with `hubfleet secrets set`, and staff (operator Ada, holding the age key) with a username per auth
    type. Returns the hubs' URLs and client secrets."""
    staging = root / "communities/uni-a/hubs/staging.yaml"
    hubs_dir = staging.parent
    staging.unlink()
    fleet_file = root / "fleet.yaml"
    fleet_file.write_text(
        fleet_file.read_text().replace(
            "      dummy: ada\n",
            f"      dummy: ada\n      oidc: {STAFF}\n      cilogon: {STAFF}\n"
            f"    age_recipient: {new_identity(identity)}\n",
        )
    )
    oidc_port, cilogon_port = free_ports(2)
    urls = {OIDC_HUB: f"http://127.0.0.1:{oidc_port}", CILOGON_HUB: f"http://127.0.0.1:{cilogon_port}"}
    oidc_id, oidc_secret = oidc.register_client([urls[OIDC_HUB] + "/hub/oauth_callback"])
    cilogon_id, cilogon_secret = cilogon.register_client([urls[CILOGON_HUB] + "/hub/oauth_callback"])
    common = {"community": "uni-a", "cluster": "local", "stage": "staging", "culling": {"enabled": False}}
    hubs = {
        OIDC_HUB: {
            "name": OIDC_HUB,
            **common,
            "port": oidc_port,
            "auth": {
                "type": "oidc",
                "issuer": oidc.url,
                "client_id": oidc_id,
                "client_secret": {"secret": "client_secret"},
                "username_claim": "preferred_username",
                "admin_users": ["grace"],
                "allowed_users": ["alice"],
                "allowed_groups": ["physics"],
                "groups_claim": "groups",
            },
        },
        CILOGON_HUB: {
            "name": CILOGON_HUB,
            **common,
            "port": cilogon_port,
            "auth": {
                "type": "cilogon",
                "cilogon_host": cilogon.host,
                "client_id": cilogon_id,
                "client_secret": {"secret": "client_secret"},
                "admin_users": ["grace"],
                "allowed_idps": {
                    UNI_IDP: {"username_claim": "eppn", "strip_domain": "uni-a.example", "allow_all": True},
                    GOOGLE_IDP: {"username_claim": "email", "allowed_domains": ["uni-a.example"]},
                },
            },
            # the hub trusts the test CA that signed the provider's certificate (verification stays on)
            "extra_config": (
                f"c.CILogonOAuthenticator.http_request_kwargs = {{'ca_certs': {str(cilogon.ca_cert)!r}}}\n"
            ),
        },
    }
    for name, hub in hubs.items():
        (hubs_dir / f"{name.removeprefix('uni-a-')}.yaml").write_text(yaml.safe_dump(hub, sort_keys=False))
    env = {"HUBFLEET_AGE_IDENTITY": str(identity)}
    for name, secret in ((OIDC_HUB, oidc_secret), (CILOGON_HUB, cilogon_secret)):
        hubfleet("secrets", "set", name, "client_secret", fleet=root, env=env, input=secret, check=True)
    return urls, {OIDC_HUB: oidc_secret, CILOGON_HUB: cilogon_secret}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("auth")
    ca = make_test_ca(base / "ca")
    with contextlib.ExitStack() as stack:
        oidc = stack.enter_context(oidc_provider(base / "logs"))
        cilogon = stack.enter_context(oidc_provider(base / "logs", tls=ca, cilogon_paths=True))
        root = copy_demo_fleet(base / "fleet", keep={"communities/uni-a/hubs/staging.yaml"})
        identity = base / "ada.txt"
        urls, client_secrets = write_fleet(root, oidc, cilogon, identity)
        stack.enter_context(running_fleet(root, {"HUBFLEET_AGE_IDENTITY": str(identity)}))
        yield Env(root, oidc, cilogon, urls, client_secrets)


def admin_api(env: Env, hub: str) -> httpx.Client:
    """The hub's REST API with an operator token from `hubfleet token`."""
    token = hubfleet("token", hub, fleet=env.root, check=True).stdout.strip()
    url = daemon_status(env.root)["hubs"][hub]["url"]
    assert url == env.urls[hub]
    return httpx.Client(base_url=url, headers={"Authorization": f"token {token}"}, timeout=30)


def assert_logged_in(client: httpx.Client, answer: httpx.Response) -> None:
    """The callback accepted the user: a redirect into the hub and the hub's login cookie."""
    assert answer.status_code == 302, (answer.status_code, answer.text[-2000:])
    assert "jupyterhub-hub-login" in client.cookies


def assert_refused(client: httpx.Client, answer: httpx.Response) -> None:
    """The hub's own 403 page, and no login cookie."""
    assert answer.status_code == 403, (answer.status_code, answer.text[-2000:])
    error = re.search(r'<div class="error">(.*?)</div>', answer.text, re.S)
    assert error and FORBIDDEN in error.group(1), (error.group(1) if error else answer.text)[-2000:]
    assert "jupyterhub-hub-login" not in client.cookies


def assert_server_answers(client: httpx.Client, user: str) -> None:
    """The user's server answers the browser: JupyterLab through the hub's OAuth for user servers (hub ->
    /hub/api/oauth2/authorize -> the server's oauth_callback), then the server's own API with that cookie."""
    lab = follow(client, client.get(f"/user/{user}/lab"))
    assert lab.status_code == 200 and lab.url.path == f"/user/{user}/lab", lab.url
    status = client.get(f"/user/{user}/api/status")
    assert status.status_code == 200 and "started" in status.json()


# --------------------------------------------------------------------------- oidc


def test_oidc_allowed_user_logs_in_and_starts_a_server(env: Env) -> None:
    env.oidc.set_user("sub-alice-1", preferred_username="alice", email="alice@uni-a.example")
    with browser(env.urls[OIDC_HUB], env.oidc) as client, admin_api(env, OIDC_HUB) as api:
        answer = log_in(client, env.oidc, "sub-alice-1")
        assert_logged_in(client, answer)
        # the hub sends a fresh user on to /hub/spawn, which starts the server
        pending = follow(client, answer)
        if (started := press_start(client, pending)) is not None:  # uni-a offers Python and R: keep Python
            pending = follow(client, started)
        # a forked server may be up before the pending page is shown: then the hub sends her to it
        assert pending.status_code == 200, pending.url
        assert pending.url.path in ("/hub/spawn-pending/alice", "/user/alice/lab"), pending.url
        server = wait_for_server(api, "alice")
        assert server["url"] == "/user/alice/"
        assert_server_answers(client, "alice")
        # not an admin: the admin panel is refused
        assert client.get("/hub/admin").status_code == 403


def test_oidc_member_of_allowed_group_gets_in(env: Env) -> None:
    env.oidc.set_user("sub-bob", preferred_username="bob", groups=["staff", "physics"])
    with browser(env.urls[OIDC_HUB], env.oidc) as client, admin_api(env, OIDC_HUB) as api:
        assert_logged_in(client, log_in(client, env.oidc, "sub-bob"))
        home = client.get("/hub/home")
        assert home.status_code == 200 and "bob" in home.text
        assert api.get("/hub/api/users/bob").json()["admin"] is False


@pytest.mark.parametrize(
    ("sub", "claims"),
    [
        ("sub-eve", {"preferred_username": "eve", "groups": ["chemistry"]}),
        ("sub-mallory", {"preferred_username": "mallory"}),
    ],
    ids=["other-group", "no-groups"],
)
def test_oidc_user_outside_allow_lists_is_refused(env: Env, sub: str, claims: dict) -> None:
    env.oidc.set_user(sub, **claims)
    with browser(env.urls[OIDC_HUB], env.oidc) as client, admin_api(env, OIDC_HUB) as api:
        assert_refused(client, log_in(client, env.oidc, sub))
        assert client.get("/hub/home").status_code in (302, 403)  # not logged in
        assert api.get(f"/hub/api/users/{claims['preferred_username']}").status_code == 404


def test_oidc_admin_sees_the_admin_panel(env: Env) -> None:
    env.oidc.set_user("sub-grace", preferred_username="grace", email="grace@uni-a.example")
    with browser(env.urls[OIDC_HUB], env.oidc) as client:
        assert_logged_in(client, log_in(client, env.oidc, "sub-grace"))
        admin = client.get("/hub/admin")
        assert admin.status_code == 200
        assert 'id="react-admin-hook"' in admin.text and "admin-react.js" in admin.text


def test_fleet_staff_are_admins_on_every_hub(env: Env) -> None:
    for hub in (OIDC_HUB, CILOGON_HUB):
        with admin_api(env, hub) as api:
            admins = {u["name"] for u in api.get("/hub/api/users").json() if u["admin"]}
            assert {STAFF, "grace"} <= admins, (hub, admins)
    # and the staff member logs in through the provider like anyone else, straight into the admin panel
    env.oidc.set_user("sub-ada", preferred_username=STAFF)
    with browser(env.urls[OIDC_HUB], env.oidc) as client:
        assert_logged_in(client, log_in(client, env.oidc, "sub-ada"))
        assert client.get("/hub/admin").status_code == 200


# --------------------------------------------------------------------------- cilogon


def test_cilogon_user_of_allowed_idp_gets_in_with_the_username_claim(env: Env) -> None:
    # eppn is the username claim for this IdP (email differs on purpose); uni-a.example is stripped
    env.cilogon.set_user(
        "cilogon-user-1001",
        idp=UNI_IDP,
        eppn="carol@uni-a.example",
        email="carol.smith@mail.example",
    )
    with browser(env.urls[CILOGON_HUB], env.cilogon) as client, admin_api(env, CILOGON_HUB) as api:
        answer = log_in(client, env.cilogon, "cilogon-user-1001")
        assert_logged_in(client, answer)
        names = {u["name"] for u in api.get("/hub/api/users").json()}
        assert "carol" in names and not any("@" in n or "smith" in n for n in names), names
        # and she gets her server like on any hub
        pending = follow(client, answer)
        if (started := press_start(client, pending)) is not None:  # uni-a offers Python and R: keep Python
            pending = follow(client, started)
        # a forked server may be up before the pending page is shown: then the hub sends her to it
        assert pending.status_code == 200, pending.url
        assert pending.url.path in ("/hub/spawn-pending/carol", "/user/carol/lab"), pending.url
        assert wait_for_server(api, "carol")["url"] == "/user/carol/"
        assert_server_answers(client, "carol")


def test_cilogon_allowed_domains_of_an_idp(env: Env) -> None:
    env.cilogon.set_user("cilogon-user-1002", idp=GOOGLE_IDP, email="dave@uni-a.example")
    env.cilogon.set_user("cilogon-user-1003", idp=GOOGLE_IDP, email="erin@mail.example")
    with browser(env.urls[CILOGON_HUB], env.cilogon) as client:
        assert_logged_in(client, log_in(client, env.cilogon, "cilogon-user-1002"))
    with browser(env.urls[CILOGON_HUB], env.cilogon) as client:
        assert_refused(client, log_in(client, env.cilogon, "cilogon-user-1003"))
    with admin_api(env, CILOGON_HUB) as api:
        names = {u["name"] for u in api.get("/hub/api/users").json()}
    assert "dave@uni-a.example" in names and "erin@mail.example" not in names


def test_cilogon_user_of_an_idp_not_allowed_is_refused(env: Env) -> None:
    env.cilogon.set_user("cilogon-user-1004", idp=EVIL_IDP, eppn="carol@uni-a.example")
    with browser(env.urls[CILOGON_HUB], env.cilogon) as client:
        answer = log_in(client, env.cilogon, "cilogon-user-1004")
        assert_refused(client, answer)
        assert "is not pre-configured" in answer.text  # OAuthenticator's reason, shown on the hub's page


def test_cilogon_admin_sees_the_admin_panel(env: Env) -> None:
    env.cilogon.set_user("cilogon-user-1005", idp=UNI_IDP, eppn="grace@uni-a.example")
    with browser(env.urls[CILOGON_HUB], env.cilogon) as client:
        assert_logged_in(client, log_in(client, env.cilogon, "cilogon-user-1005"))
        assert client.get("/hub/admin").status_code == 200


def test_client_secrets_reach_the_hubs_but_no_file(env: Env) -> None:
    """The provider checked each client secret at every login above; on disk they exist only encrypted."""
    files = [p for p in env.root.rglob("*") if p.is_file()]  # fleet files, rendered config, logs, databases
    assert any(p.name == "jupyterhub_config.py" for p in files)
    for path in files:
        text = path.read_text(errors="replace")
        for secret in env.client_secrets.values():
            assert secret not in text, path


def test_check_of_an_oauth_hub_keeps_the_rest_path(env: Env) -> None:
    """An OAuth hub has no form the check user could sign in with: the synthetic check leaves `sign_in` out
    and runs through the REST API alone (the login itself is covered by the provider flows above)."""
    result = hubfleet("check", OIDC_HUB, "--json", fleet=env.root)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    for checked in report.get("environments", [report]):  # one check per environment (uni-a: Python, R)
        steps = [step["name"] for step in checked["steps"]]
        assert steps[0] == "create_user" and "sign_in" not in steps

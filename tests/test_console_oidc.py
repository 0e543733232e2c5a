"""Console sign-in through a real OpenID Connect provider (oidc-provider-mock on loopback, see
oidc_helpers.py): authorization code flow with PKCE, the client secret from secrets/fleet.yaml sent with
HTTP Basic, the username claim matched against fleet.yaml console.accounts."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlparse

import httpx
import pytest

from console_helpers import start_console, stop_console
from fleet_helpers import copy_demo_fleet, free_ports, hubfleet
from oidc_helpers import Provider, _form_action, new_identity, oidc_provider

OPERATOR = "ops@uni-a.example"
LEADER = "prof@uni-a.example"


@dataclass
class Env:
    url: str
    provider: Provider
    client_secret: str
    root: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("console-oidc")
    with contextlib.ExitStack() as stack:
        provider = stack.enter_context(oidc_provider(base / "logs"))
        root = copy_demo_fleet(base / "fleet")
        identity = base / "ada.txt"
        (port,) = free_ports(1)
        url = f"http://127.0.0.1:{port}"
        client_id, secret = provider.register_client([url + "/login/oidc/callback"], "client_secret_basic")
        fleet_yaml = root / "fleet.yaml"
        text = fleet_yaml.read_text()
        text = text.replace(
            "      dummy: ada\n", f"      dummy: ada\n    age_recipient: {new_identity(identity)}\n"
        )
        text = (
            text.rstrip("\n")
            + "\n"
            + (
                "console:\n"
                "  password_sign_in: false\n"
                "  oidc:\n"
                f"    issuer: {provider.url}\n"
                f"    client_id: {client_id}\n"
                "    client_secret: {secret: console_oidc_secret}\n"
                "    username_claim: email\n"
                "  accounts:\n"
                f"    - {{username: {OPERATOR}, role: operator}}\n"
                f"    - {{username: {LEADER}, role: community-leader, communities: [uni-a]}}\n"
            )
        )
        fleet_yaml.write_text(text)
        age_env = {"HUBFLEET_AGE_IDENTITY": str(identity)}
        hubfleet(
            "secrets",
            "set",
            "--fleet-level",
            "console_oidc_secret",
            fleet=root,
            env=age_env,
            input=secret,
            check=True,
        )
        hubfleet("validate", fleet=root, check=True)
        state = root / ".hubfleet"
        state.mkdir()
        process = start_console(root, state, port, env=age_env)
        stack.callback(stop_console, process)
        yield Env(url, provider, secret, root)


def sign_in(env: Env, sub: str, next_url: str = "/") -> tuple[httpx.Client, httpx.Response]:
    """A browser: console /login/oidc -> the provider's page -> the person submits `sub` -> the console's
    callback. Returns the client and the console's answer to the callback (not followed)."""
    client = httpx.Client(base_url=env.url, follow_redirects=False, timeout=30)
    start = client.get("/login/oidc", params={"next": next_url})
    assert start.status_code == 303, start.text[:500]
    authorize = start.headers["location"]
    query = parse_qs(urlparse(authorize).query)
    assert authorize.startswith(env.provider.url)
    assert query["code_challenge_method"] == ["S256"] and query["redirect_uri"] == [
        env.url + "/login/oidc/callback"
    ]
    page = client.get(authorize)
    assert page.status_code == 200 and 'name="sub"' in page.text, page.text[:500]
    action = _form_action(page.text)
    answer = client.post(urljoin(authorize, action) if action else authorize, data={"sub": sub})
    assert answer.status_code == 302, answer.text[:500]
    callback = answer.headers["location"]
    assert callback.startswith(env.url + "/login/oidc/callback?")
    return client, client.get(callback)


def test_the_sign_in_page_offers_only_oidc(env: Env) -> None:
    page = httpx.get(env.url + "/login")
    assert page.status_code == 200
    assert "/login/oidc" in page.text and "Sign in with your institution" in page.text
    assert 'name="password"' not in page.text


def test_an_operator_signs_in_with_the_provider_and_sees_the_fleet(env: Env) -> None:
    env.provider.set_user("ops-sub", email=OPERATOR)
    client, answer = sign_in(env, "ops-sub", next_url="/incidents")
    assert answer.status_code == 303 and answer.headers["location"] == "/incidents"
    me = client.get("/api/me").json()
    assert me["username"] == OPERATOR and me["role"] == "operator" and me["via"] == "session"
    assert {h["name"] for h in client.get("/api/hubs").json()["hubs"]} == {
        "uni-a-staging",
        "uni-a",
        "hackweek-staging",
        "hackweek",
    }


def test_a_leader_signed_in_with_the_provider_sees_only_their_community(env: Env) -> None:
    env.provider.set_user("prof-sub", email=LEADER)
    client, answer = sign_in(env, "prof-sub")
    assert answer.status_code == 303
    assert {h["name"] for h in client.get("/api/hubs").json()["hubs"]} == {"uni-a-staging", "uni-a"}
    assert client.get("/api/hubs/hackweek").status_code == 404


def test_someone_without_an_account_is_refused_with_a_clear_message(env: Env) -> None:
    env.provider.set_user("stranger-sub", email="stranger@elsewhere.example")
    client, answer = sign_in(env, "stranger-sub")
    assert answer.status_code == 403
    assert "There is no console account for stranger@elsewhere.example" in answer.text
    assert client.get("/api/me").status_code == 401


def test_a_callback_with_a_forged_state_is_refused(env: Env) -> None:
    client = httpx.Client(base_url=env.url, follow_redirects=False, timeout=30)
    answer = client.get("/login/oidc/callback", params={"code": "abc", "state": "made-up"})
    assert answer.status_code == 400 and "try again" in answer.text
    assert client.get("/api/me").status_code == 401


def test_the_client_secret_stays_out_of_pages_and_logs(env: Env) -> None:
    env.provider.set_user("ops-sub", email=OPERATOR)
    client, _ = sign_in(env, "ops-sub")
    seen = client.get("/").text + client.get("/api/openapi.json").text
    log = (env.root / ".hubfleet" / "console.log").read_text()
    assert env.client_secret not in seen and env.client_secret not in log
    assert re.search(r"signed in \(oidc\)", log)

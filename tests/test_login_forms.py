"""Sign-in as a person does it: the hubs' real login and sign-up forms posted with a browser's cookies and the
`_xsrf` field, on a demo fleet copy run by the daemon (no mocks). Native: sign up, approval by an admin, log
in, wrong password; admin and staff names cannot be claimed. Dummy: log in and start a server; wrong password.
The synthetic check signs in through the form, and a broken login page fails it."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fleet_helpers import (
    copy_demo_fleet,
    daemon_status,
    free_ports,
    hubfleet,
    press_start,
    running_fleet,
    wait_for,
)

pytestmark = pytest.mark.integration

NATIVE = "uni-a"  # native, approval by an admin; admins grace and (staff) ada
OPEN = "hackweek"  # native, open_signup; admins omar and (staff) ada
DUMMY = "uni-a-staging"  # dummy, password demo-staging
BROKEN = "broken-native"  # native, hackweek's staging hub here; its extra_config undoes the JupyterHub 6 fix
BROKEN_HUB = """\
name: broken-native
community: hackweek
cluster: local
stage: staging
port: {port}
auth:
  type: native
  admin_users: [omar]
extra_config: |
  import nativeauthenticator.handlers
  del nativeauthenticator.handlers.LoginHandler.statsd
"""
PASSWORD = "a-long-enough-password-1"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = copy_demo_fleet(
        tmp_path_factory.mktemp("fleet") / "demo",
        keep={
            "communities/uni-a/hubs/prod.yaml",
            "communities/uni-a/hubs/staging.yaml",
            "communities/hackweek/hubs/prod.yaml",
        },
    )
    (root / "communities/hackweek/hubs/broken.yaml").write_text(BROKEN_HUB.format(port=free_ports(1)[0]))
    with running_fleet(root):
        yield root


def hub_url(fleet: Path, hub: str) -> str:
    return daemon_status(fleet)["hubs"][hub]["url"]


def operator(fleet: Path, hub: str) -> httpx.Client:
    token = hubfleet("token", hub, fleet=fleet, check=True).stdout.strip()
    return httpx.Client(base_url=hub_url(fleet, hub), headers={"Authorization": f"token {token}"}, timeout=30)


def browser(fleet: Path, hub: str) -> httpx.Client:
    """A client like a browser: a cookie jar, no token."""
    return httpx.Client(base_url=hub_url(fleet, hub), timeout=30, follow_redirects=False)


def post_form(client: httpx.Client, path: str, fields: dict[str, str]) -> httpx.Response:
    """GET the page, then POST its form with `fields` and the page's _xsrf value, as the browser would."""
    page = client.get(path)
    assert page.status_code == 200, page.text[:500]
    xsrf = re.search(r'name="_xsrf"\s+value="([^"]*)"', page.text)
    assert xsrf, f"no _xsrf field in {path}"
    return client.post(path, data={**fields, "_xsrf": html.unescape(xsrf.group(1))})


def sign_up(client: httpx.Client, username: str, password: str = PASSWORD) -> str:
    response = post_form(
        client,
        "/hub/signup",
        {"username": username, "signup_password": password, "signup_password_confirmation": password},
    )
    assert response.status_code == 200, response.text[:500]
    return " ".join(html.unescape(response.text).split())


def log_in(client: httpx.Client, username: str, password: str = PASSWORD) -> httpx.Response:
    return post_form(client, "/hub/login", {"username": username, "password": password})


def login_error(response: httpx.Response) -> str:
    found = re.search(r'<p class="login_error">(.*?)</p>', response.text, re.S)
    return " ".join(html.unescape(found.group(1)).split()) if found else ""


def signed_in_as(client: httpx.Client) -> str | None:
    """Whom the session cookie belongs to (/hub/home answers 200 only when signed in)."""
    home = client.get("/hub/home")
    if home.status_code != 200:
        return None
    found = re.search(r'data-user="([^"]+)"|"user":\s*"([^"]+)"|/user/([^/"]+)/', home.text)
    return next((g for g in found.groups() if g), "?") if found else "?"


def test_native_sign_up_approval_log_in_and_wrong_password(fleet: Path) -> None:
    # an admin signs up: a reserved name, so not approved by itself, even as an admin
    grace = browser(fleet, NATIVE)
    assert "sent to the admin" in sign_up(grace, "grace")
    refused = log_in(grace, "grace")
    assert refused.status_code == 200 and "has not been authorized" in login_error(refused)
    # the operator approves the first admin through the hub's API, with `hubfleet token`
    ops = operator(fleet, NATIVE)
    assert ops.get("/hub/api/native/users/grace").json() == {"name": "grace", "authorized": False}
    approved = ops.patch("/hub/api/native/users/grace", json={"authorized": True})
    assert approved.status_code == 200 and approved.json()["authorized"] is True
    welcome = log_in(grace, "grace")
    assert welcome.status_code == 302, login_error(welcome) or welcome.text[:500]
    assert signed_in_as(grace)

    # a user signs up and waits for approval
    pierre = browser(fleet, NATIVE)
    assert "sent to the admin" in sign_up(pierre, "pierre")
    waiting = log_in(pierre, "pierre")
    assert waiting.status_code == 200 and "has not been authorized" in login_error(waiting)
    assert signed_in_as(pierre) is None
    # the admin approves them on the native authorize page, signed in with the form
    page = grace.get("/hub/authorize")
    assert page.status_code == 200 and "/hub/authorize/pierre" in page.text
    assert grace.get("/hub/authorize/pierre").status_code == 302
    # the wrong password: the page's message, not a 500
    wrong = log_in(pierre, "pierre", "not-the-password-at-all")
    assert wrong.status_code == 200 and login_error(wrong) == "Invalid username or password."
    assert signed_in_as(pierre) is None
    right = log_in(pierre, "pierre")
    assert right.status_code == 302, login_error(right) or right.text[:500]
    assert signed_in_as(pierre)
    users = {u["name"]: u for u in ops.get("/hub/api/users").json()}
    assert users["pierre"]["admin"] is False and users["grace"]["admin"] is True


@pytest.mark.parametrize("hub", [NATIVE, OPEN])
def test_staff_and_admin_names_cannot_be_claimed(fleet: Path, hub: str) -> None:
    """A stranger who signs up first as the staff member `ada` (admin on every native hub) is not approved,
    not even with open sign-up, and cannot sign in; the check user's name cannot be signed up at all."""
    stranger = browser(fleet, hub)
    message = sign_up(stranger, "ada", "strangers-password-1")
    assert "sent to the admin" in message and "You can now go to the home page" not in message
    refused = log_in(stranger, "ada", "strangers-password-1")
    assert refused.status_code == 200 and "has not been authorized" in login_error(refused)
    assert signed_in_as(stranger) is None
    # the operator sees the claim and discards it, so that the real ada can sign up
    ops = operator(fleet, hub)
    assert ops.get("/hub/api/native/users/ada").json() == {"name": "ada", "authorized": False}
    assert ops.delete("/hub/api/native/users/ada").status_code == 204
    assert ops.get("/hub/api/native/users/ada").status_code == 404

    claim = sign_up(browser(fleet, hub), "hubfleet-check", "strangers-password-1")
    assert "Something went wrong" in claim
    assert log_in(browser(fleet, hub), "hubfleet-check", "strangers-password-1").status_code == 200


def test_open_signup_still_lets_everyone_else_in(fleet: Path) -> None:
    olga = browser(fleet, OPEN)
    assert "You can now go to the home page" in sign_up(olga, "olga")
    assert log_in(olga, "olga").status_code == 302
    assert signed_in_as(olga)


def test_dummy_log_in_starts_a_server_and_wrong_password_is_refused(fleet: Path) -> None:
    alice = browser(fleet, DUMMY)
    wrong = log_in(alice, "alice", "not-demo-staging")
    # JupyterHub's own login page answers 403 with its message (NativeAuthenticator's answers 200)
    assert wrong.status_code == 403 and login_error(wrong) == "Invalid username or password"
    assert signed_in_as(alice) is None
    right = log_in(alice, "alice", "demo-staging")
    assert right.status_code == 302, login_error(right) or right.text[:500]
    assert signed_in_as(alice)
    # start the server the way the home page's button does, then open it through the proxy
    press_start(alice, alice.get("/hub/spawn"))  # the demo's uni-a hubs offer Python and R: keep Python
    ops = operator(fleet, DUMMY)

    def ready() -> bool:
        server = (ops.get("/hub/api/users/alice").json().get("servers") or {}).get("")
        return bool(server and server.get("ready"))

    try:
        wait_for(ready, timeout=120)
        # the server's own page, through the proxy and the OAuth hand-over with the hub's session cookie
        lab = alice.get("/user/alice/lab", follow_redirects=True)
        assert lab.status_code == 200 and lab.url.path.startswith("/user/alice/"), lab.text[:500]
    finally:
        ops.delete("/hub/api/users/alice/server")


def test_check_signs_in_through_the_native_form(fleet: Path) -> None:
    result = hubfleet("check", NATIVE, "--json", fleet=fleet)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    # a hub with environments reports one check per environment (the demo's uni-a offers Python and R)
    steps = [s["name"] for s in report.get("environments", [report])[0]["steps"]]
    assert steps[:2] == ["sign_in", "create_user"]


def test_check_fails_when_the_login_page_is_broken(fleet: Path) -> None:
    """The original bug (POST /hub/login answering 500 on JupyterHub 6) is an incident, not a green check."""
    result = hubfleet("check", BROKEN, "--json", fleet=fleet)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["failed_step"] == "sign_in"
    assert "HTTP 500" in report["steps"][0]["detail"]
    token = json.loads((fleet / ".hubfleet/hubs" / BROKEN / "tokens.json").read_text())["control"]
    assert token not in result.stdout + result.stderr

"""Integration: users logged in and spawned on two real hubs show up in `hubfleet usage` (issue 5, §6)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from fleet_helpers import copy_demo_fleet, daemon_status, hubfleet, running_fleet
from hubfleet.store import open_store
from hubfleet.store.models import ServerSession, UserDay

pytestmark = pytest.mark.integration

HUBS = ("uni-a-staging", "hackweek-staging")  # both dummy auth (password demo-staging); staff: ada
KEEP = {f"communities/{c}/hubs/staging.yaml" for c in ("uni-a", "hackweek")}


def login(url: str, username: str) -> None:
    """A real login through the hub's form, then the hub's home page (which records activity)."""
    with httpx.Client(base_url=url, timeout=30) as browser:
        browser.get("/hub/login")
        xsrf = browser.cookies.get("_xsrf")
        response = browser.post(
            "/hub/login",
            data={"username": username, "password": "demo-staging", "_xsrf": xsrf},
            headers={"X-XSRFToken": xsrf},
        )
        assert response.status_code in (200, 302), response.text[:300]
        assert browser.cookies.get("jupyterhub-hub-login"), f"{username} was not logged in"
        # the first page seen logged in records the user's activity
        assert browser.get("/hub/home").status_code == 200


def operator_token(root: Path, hub: str) -> str:
    """What `hubfleet token HUB` prints, without a subprocess."""
    return json.loads((root / ".hubfleet" / "hubs" / hub / "tokens.json").read_text())["operator"]


def spawn(client: httpx.Client, username: str) -> None:
    client.post(f"/hub/api/users/{username}")
    client.post(f"/hub/api/users/{username}/server")  # may answer 500 on a slow spawn; poll instead


def wait_ready(client: httpx.Client, username: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server = client.get(f"/hub/api/users/{username}").json().get("servers", {}).get("")
        if server and server.get("ready"):
            return
        time.sleep(0.3)
    raise AssertionError(f"{username}'s server did not start within {timeout} s")


def test_usage_counts_people_on_two_hubs(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "demo", keep=KEEP)
    with running_fleet(root, env={"HUBFLEET_COLLECT_INTERVAL": "1"}):
        urls = {hub: daemon_status(root)["hubs"][hub]["url"] for hub in HUBS}
        clients = {
            hub: httpx.Client(
                base_url=urls[hub],
                headers={"Authorization": f"token {operator_token(root, hub)}"},
                timeout=30,
            )
            for hub in HUBS
        }
        uni, hack = clients["uni-a-staging"], clients["hackweek-staging"]
        # alice starts a server on both hubs, bob and carol log in to one each; dan is created but never
        # active; ada (staff) and the check user are active but never counted.
        for client in (uni, hack):
            spawn(client, "alice")
        hack.post("/hub/api/users/dan")
        login(urls["uni-a-staging"], "bob")
        login(urls["hackweek-staging"], "carol")
        login(urls["uni-a-staging"], "ada")
        login(urls["uni-a-staging"], "hubfleet-check")
        for client in (uni, hack):
            wait_ready(client, "alice")

        expected_hubs = {"uni-a-staging": 2, "hackweek-staging": 2}
        deadline = time.monotonic() + 30
        while True:
            report = json.loads(hubfleet("usage", "--json", fleet=root, check=True).stdout)
            counts = {hub: report["hubs"][hub]["dau"] for hub in HUBS}
            hours = {hub: report["hubs"][hub]["server_hours"] for hub in HUBS}
            if counts == expected_hubs and all(h > 0 for h in hours.values()):
                break
            assert time.monotonic() < deadline, f"usage never showed the users: {report}"
            time.sleep(1)
        for client in clients.values():
            client.close()

    for hub in HUBS:
        row = report["hubs"][hub]
        assert (row["dau"], row["wau"], row["mau"]) == (2, 2, 2), (hub, row)
        assert row["peak_servers"] == 1
        assert "hub_reported_active_24h" in row and row["hub_reported_at"]
    # alice on both hubs is one person: alice, bob, carol
    assert {k: report["fleet"][k] for k in ("dau", "wau", "mau")} == {"dau": 3, "wau": 3, "mau": 3}
    assert report["fleet"]["server_hours"] > 0 and report["fleet"]["peak_servers"] == 2
    assert report["days"][-1]["dau"] == 3

    with open_store(root / ".hubfleet") as store, store.session() as session:
        counted = {(d.hub, d.username, d.identity) for d in session.query(UserDay)}
        assert counted == {
            ("uni-a-staging", "alice", "dummy:alice"),
            ("uni-a-staging", "bob", "dummy:bob"),
            ("hackweek-staging", "alice", "dummy:alice"),
            ("hackweek-staging", "carol", "dummy:carol"),
        }
        sessions = {(s.hub, s.username) for s in session.query(ServerSession)}
        assert sessions == {("uni-a-staging", "alice"), ("hackweek-staging", "alice")}

"""The console's JSON API and sign-in, against the real `hubfleet console` process over a seeded demo fleet.

Who may see what: operators everything, community leaders only their communities (anything else is a 404
with the same body as a name that does not exist); anonymous callers, revoked and expired tokens get 401;
cookie sessions need X-CSRF-Token to change anything. Also: every chart as JSON and as CSV, parameter
bounds (422, never 500), API tokens, sign-in lockout, sign-out, account removal and open redirects."""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from console_helpers import (
    ConsoleFleet,
    console_fleet,
    sign_in,
    signed_in_client,
    start_console,
    stop_console,
    write_accounts,
)
from fleet_helpers import copy_demo_fleet, free_ports, hubfleet, running_fleet
from hubfleet.store.api import open_store

CHARTS = ["active-users", "running-servers", "spawn-duration", "probe-latency", "uptime"]
RELOAD_SECONDS = 6.0
"""The console looks at the fleet files every 2 s; a generous bound for a loaded machine."""


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleFleet]:
    with console_fleet(tmp_path_factory.mktemp("console-api")) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def hubs(cf: ConsoleFleet) -> dict[str, list[str]]:
    """community -> its hub names, as the fleet files say."""
    return cf.hubs_by_community


@pytest.fixture(scope="module")
def api(cf: ConsoleFleet) -> Iterator[dict[str, httpx.Client]]:
    """username -> a client sending that user's API token; "anon" sends none."""
    clients = {
        username: httpx.Client(base_url=cf.url, timeout=30, headers={"Authorization": f"Bearer {token}"})
        for username, token in cf.tokens.items()
    }
    clients["anon"] = httpx.Client(base_url=cf.url, timeout=30)
    yield clients
    for client in clients.values():
        client.close()


def all_hubs(hubs: dict[str, list[str]]) -> list[str]:
    return sorted(name for names in hubs.values() for name in names)


def detail(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text[:300]
    value = response.json()["detail"]
    assert isinstance(value, str)
    return value


def assert_same_404(
    foreign: httpx.Response, missing: httpx.Response, foreign_name: str, missing_name: str
) -> None:
    """A name the caller may not see answers exactly like a name that does not exist."""
    assert foreign.status_code == missing.status_code == 404, (foreign.text, missing.text)
    assert detail(foreign).replace(foreign_name, "NAME") == detail(missing).replace(missing_name, "NAME")
    assert foreign.headers["content-type"] == missing.headers["content-type"]
    assert foreign_name in detail(foreign)


def eventually(fetch: Callable[[], Any], attempts: int = 3) -> Any:
    """Charts bucket by time: two reads straddling a bucket boundary differ. Retry a comparison."""
    for attempt in range(attempts):
        try:
            return fetch()
        except AssertionError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
    return None


# --------------------------------------------------------------------------- every endpoint

ENDPOINTS: list[tuple[str, str, str]] = [
    # (method, OpenAPI path, concrete path)
    ("GET", "/api/me", "/api/me"),
    ("GET", "/api/hubs", "/api/hubs"),
    ("GET", "/api/hubs/{hub}", "/api/hubs/uni-a-staging"),
    ("GET", "/api/hubs/{hub}/charts/{chart}", "/api/hubs/uni-a-staging/charts/uptime"),
    ("GET", "/api/hubs/{hub}/charts/{chart}.csv", "/api/hubs/uni-a-staging/charts/uptime.csv"),
    ("POST", "/api/hubs/{hub}/checks", "/api/hubs/uni-a-staging/checks"),
    ("GET", "/api/communities", "/api/communities"),
    ("GET", "/api/communities/{name}", "/api/communities/uni-a"),
    ("GET", "/api/communities/{name}/charts/{chart}", "/api/communities/uni-a/charts/uptime"),
    ("GET", "/api/communities/{name}/charts/{chart}.csv", "/api/communities/uni-a/charts/uptime.csv"),
    ("GET", "/api/fleet/charts/{chart}", "/api/fleet/charts/uptime"),
    ("GET", "/api/fleet/charts/{chart}.csv", "/api/fleet/charts/uptime.csv"),
    ("GET", "/api/incidents", "/api/incidents"),
    ("GET", "/api/deployments", "/api/deployments"),
    ("GET", "/api/checks", "/api/checks"),
    ("GET", "/api/tokens", "/api/tokens"),
    ("POST", "/api/tokens", "/api/tokens"),
    ("DELETE", "/api/tokens/{token_id}", "/api/tokens/1"),
    ("GET", "/api/events", "/api/events"),
    ("GET", "/api/events/{hub}/{event}", "/api/events/uni-a/phys101-first-lab"),
    ("GET", "/api/events/{hub}/{event}/report", "/api/events/uni-a/phys101-first-lab/report"),
    ("GET", "/api/costs", "/api/costs"),
    ("GET", "/api/costs/charts/daily-cost", "/api/costs/charts/daily-cost"),
    ("GET", "/api/costs/charts/daily-cost.csv", "/api/costs/charts/daily-cost.csv"),
    ("GET", "/api/communities/{name}/costs", "/api/communities/uni-a/costs"),
    (
        "GET",
        "/api/communities/{name}/costs/charts/daily-cost",
        "/api/communities/uni-a/costs/charts/daily-cost",
    ),
    (
        "GET",
        "/api/communities/{name}/costs/charts/daily-cost.csv",
        "/api/communities/uni-a/costs/charts/daily-cost.csv",
    ),
    ("GET", "/api/communities/{name}/invoices", "/api/communities/uni-a/invoices"),
    (
        "GET",
        "/api/communities/{name}/invoices/{number}/{fmt}",
        "/api/communities/uni-a/invoices/DEMO-2026-0001/pdf",
    ),
    # the support desk (tested in test_console_support.py)
    ("GET", "/api/tickets", "/api/tickets"),
    ("POST", "/api/tickets", "/api/tickets"),
    ("GET", "/api/tickets/{ticket_id}", "/api/tickets/1"),
    *[
        ("POST", f"/api/tickets/{{ticket_id}}/{action}", f"/api/tickets/1/{action}")
        for action in ("reply", "note", "assign", "escalate", "resolve", "priority", "state", "time", "hub")
    ],
    ("GET", "/api/tickets/{ticket_id}/attachments/{attachment_id}", "/api/tickets/1/attachments/1"),
    ("GET", "/api/communities/{name}/support-hours", "/api/communities/uni-a/support-hours"),
    ("GET", "/api/communities/{name}/support-hours/chart", "/api/communities/uni-a/support-hours/chart"),
]


def test_the_openapi_document_lists_exactly_these_endpoints(api: dict[str, httpx.Client]) -> None:
    document = api["anon"].get("/api/openapi.json").json()
    documented = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert documented == {(method, path) for method, path, _ in ENDPOINTS}
    assert document["components"]["securitySchemes"]["token"]["scheme"] == "bearer"


@pytest.mark.parametrize(("method", "template", "path"), ENDPOINTS, ids=[f"{m} {t}" for m, t, _ in ENDPOINTS])
def test_anonymous_callers_get_401_everywhere(
    api: dict[str, httpx.Client], method: str, template: str, path: str
) -> None:
    body = {"name": "x"} if method == "POST" else None
    response = api["anon"].request(method, path, json=body)
    assert response.status_code == 401, response.text
    assert "API token" in detail(response)
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("token", ["hf_not-a-real-token", "not-even-prefixed", "hf_"])
def test_unknown_tokens_get_401(cf: ConsoleFleet, token: str) -> None:
    response = httpx.get(f"{cf.url}/api/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_expired_tokens_get_401(cf: ConsoleFleet) -> None:
    from hubfleet.console import accounts
    from hubfleet.store import open_store

    with open_store(cf.state_dir) as store:
        expired, _ = accounts.create_token(store, "ops", "old", expires_days=-1)
        fresh, _ = accounts.create_token(store, "ops", "new", expires_days=1)
    assert httpx.get(f"{cf.url}/api/me", headers={"Authorization": f"Bearer {expired}"}).status_code == 401
    assert httpx.get(f"{cf.url}/api/me", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200


@pytest.mark.parametrize(
    ("username", "role", "communities"),
    [
        ("ops", "operator", []),
        ("lead-a", "community-leader", ["uni-a"]),
        ("lead-h", "community-leader", ["hackweek"]),
    ],
)
def test_me_names_the_caller(
    cf: ConsoleFleet, api: dict[str, httpx.Client], username: str, role: str, communities: list[str]
) -> None:
    assert api[username].get("/api/me").json() == {
        "username": username,
        "role": role,
        "communities": communities,
        "display_name": username,
        "via": "token",
    }
    with contextlib.closing(signed_in_client(cf, username)) as browser:
        assert browser.get("/api/me").json()["via"] == "session"


# --------------------------------------------------------------------------- hubs


def test_operators_see_every_hub_and_leaders_only_theirs(
    api: dict[str, httpx.Client], hubs: dict[str, list[str]]
) -> None:
    everything = api["ops"].get("/api/hubs").json()
    assert sorted(row["name"] for row in everything["hubs"]) == all_hubs(hubs)
    assert everything["totals"]["hubs"] == len(all_hubs(hubs))
    for username, community in (("lead-a", "uni-a"), ("lead-h", "hackweek")):
        mine = api[username].get("/api/hubs").json()
        assert sorted(row["name"] for row in mine["hubs"]) == hubs[community]
        assert {row["community"] for row in mine["hubs"]} == {community}
        assert mine["totals"]["hubs"] == len(hubs[community])
        assert mine["totals"]["open_incidents"] == sum(row["open_incidents"] for row in mine["hubs"])


def test_overview_rows_carry_the_seeded_figures(api: dict[str, httpx.Client]) -> None:
    rows = {row["name"]: row for row in api["ops"].get("/api/hubs").json()["hubs"]}
    staging = rows["uni-a-staging"]
    assert staging["state"] == "stopped"  # no hub runs in these tests
    assert staging["cluster_kind"] == "local" and staging["stage"] == "staging"
    assert staging["version"] == "6.1.1"
    assert 99.0 < staging["uptime_30d"] <= 100.0
    assert staging["mau"] >= staging["wau"] >= staging["dau"] > 0
    assert staging["last_deploy"]["actor"] == "ops@ci"
    assert staging["last_probe_ok"] is True
    assert rows["hackweek-staging"]["open_incidents"] == 1  # the seeded anomaly
    assert rows["uni-a"]["open_incidents"] == 1 and rows["hackweek"]["open_incidents"] == 0


def test_hub_list_filters(api: dict[str, httpx.Client], hubs: dict[str, list[str]]) -> None:
    ops = api["ops"]
    assert [r["name"] for r in ops.get("/api/hubs", params={"community": "uni-a"}).json()["hubs"]] == hubs[
        "uni-a"
    ]
    assert len(ops.get("/api/hubs", params={"cluster": "local"}).json()["hubs"]) == len(all_hubs(hubs))
    assert ops.get("/api/hubs", params={"cluster": "elsewhere"}).json() == {
        "hubs": [],
        "totals": {"hubs": 0, "running": 0, "running_servers": 0, "open_incidents": 0, "by_state": {}},
    }
    assert len(ops.get("/api/hubs", params={"state": "stopped"}).json()["hubs"]) == len(all_hubs(hubs))
    assert ops.get("/api/hubs", params={"state": "running"}).json()["hubs"] == []
    lead = api["lead-a"]
    assert_same_404(
        lead.get("/api/hubs", params={"community": "hackweek"}),
        lead.get("/api/hubs", params={"community": "no-such-community"}),
        "hackweek",
        "no-such-community",
    )


def test_operators_read_every_hub_in_detail(api: dict[str, httpx.Client], hubs: dict[str, list[str]]) -> None:
    for name in all_hubs(hubs):
        hub = api["ops"].get(f"/api/hubs/{name}").json()
        assert hub["name"] == name
        assert set(hub["uptime"]) == {"24h", "7d", "30d"}
        assert hub["auth_type"] in ("dummy", "native")


def test_a_leader_reads_their_hub_in_detail(api: dict[str, httpx.Client]) -> None:
    hub = api["lead-a"].get("/api/hubs/uni-a-staging").json()
    assert hub["community"] == "uni-a"
    assert len(hub["deploys"]) == 3 and {d["result"] for d in hub["deploys"]} == {"ok", "rolled_back"}
    assert [c["total_seconds"] for c in hub["checks"]] == [6.5]
    assert hub["checks"][0]["steps"][0] == {"name": "spawn", "ok": True, "seconds": 4.2, "detail": ""}
    assert [r["exit_code"] for r in hub["restarts"]] == [1]
    assert hub["uptime"]["24h"] == 100.0
    assert [c["email"] for c in hub["contacts"]] == ["grace@uni-a.example"]


def test_the_hub_page_shows_who_deployed_why_and_uptime_without_planned_maintenance(
    cf: ConsoleFleet, api: dict[str, httpx.Client]
) -> None:
    from hubfleet.monitor.uptime import ProbeResult, record_samples

    now = datetime.now(UTC)
    with open_store(cf.state_dir) as store:
        store.record_deployment(
            "uni-a", "c" * 64, "ok", actor="Ada <ada@x> via hubfleet deploy",
            reasons=["max_users: 100 → 150"], commit="0123456789abcdef0123",
        )  # fmt: skip
        window = store.begin_maintenance("uni-a", reason="deploy (update)")
        probes = [
            ProbeResult("uni-a", "http://127.0.0.1:1", now - timedelta(minutes=m), ok, 200, 200, 1.0)
            for m, ok in ((3, True), (2, False))
        ]
        record_samples(store, probes)  # the failure falls in the deploy's window
        store.end_maintenance(window)
    detail = api["ops"].get("/api/hubs/uni-a").json()
    # the fixture's probes plus ours: only the failure during the deploy differs between the two figures
    assert detail["uptime_unplanned"]["24h"] > detail["uptime"]["24h"]
    assert detail["deploys"][0]["reasons"] == ["max_users: 100 → 150"]
    assert detail["deploys"][0]["commit"] == "0123456789abcdef0123"
    with contextlib.closing(signed_in_client(cf, "ops")) as browser:
        page = browser.get("/hubs/uni-a").text
    assert "why: max_users: 100 → 150" in page and ">0123456789ab</code>" in page
    assert "w/o planned" in page


def test_limit_events_on_the_hub_page_and_api_for_those_who_may_see_the_hub(
    cf: ConsoleFleet, api: dict[str, httpx.Client]
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    detail_text = "memory limit 512M reached: 1 process killed"
    with open_store(cf.state_dir) as store:  # as the daemon records them; the console reads the store
        store.record_limit_event(
            "uni-a-staging", username="ada", kind="pids", detail="forks <refused> at 64", count=3, at=at
        )
        store.record_limit_event(
            "uni-a-staging", username="grace", kind="memory", detail=detail_text, at=at + timedelta(minutes=1)
        )
    expected = [
        {
            "username": "grace",
            "kind": "memory",
            "at": at + timedelta(minutes=1),
            "count": 1,
            "detail": detail_text,
        },
        {"username": "ada", "kind": "pids", "at": at, "count": 3, "detail": "forks <refused> at 64"},
    ]
    for username in ("ops", "lead-a"):
        events = api[username].get("/api/hubs/uni-a-staging").json()["limit_events"]
        assert [{**e, "at": datetime.fromisoformat(e["at"])} for e in events] == expected

    with contextlib.closing(signed_in_client(cf, "ops")) as browser:
        page = browser.get("/hubs/uni-a-staging")
        assert page.status_code == 200
        section = page.text[page.text.index('id="limits-heading"') :]
        assert "Limits reached" in page.text and detail_text in section
        assert section.index("<td>grace</td>") < section.index("<td>ada</td>")  # newest first
        assert f'<time datetime="{at.isoformat()}"' in section
        assert "forks &lt;refused&gt; at 64" in section and "<refused>" not in section
        assert 'data-limit-event="pids"' in section and ">processes</span>" in section
        empty = browser.get("/hubs/hackweek").text
        assert "None recorded." in empty[empty.index('id="limits-heading"') :]

    lead_h = api["lead-h"]
    foreign, missing = lead_h.get("/api/hubs/uni-a-staging"), lead_h.get("/api/hubs/no-such-hub")
    assert_same_404(foreign, missing, "uni-a-staging", "no-such-hub")
    with contextlib.closing(signed_in_client(cf, "lead-h")) as browser:
        browser.headers["Accept"] = "text/html"  # as a browser asks: the error is a page, not JSON
        foreign_page, missing_page = browser.get("/hubs/uni-a-staging"), browser.get("/hubs/no-such-hub")
        assert foreign_page.status_code == missing_page.status_code == 404
        assert "Not found" in foreign_page.text and "Not found" in missing_page.text
        assert detail_text not in foreign_page.text and "Limits reached" not in foreign_page.text


# --------------------------------------------------------------------------- isolation

FOREIGN_HUB_PATHS = [
    "/api/hubs/{}",
    "/api/hubs/{}/charts/uptime",
    "/api/hubs/{}/charts/uptime.csv",
    "/api/hubs/{}/charts/no-such-chart",
    "/api/hubs/{}/charts/no-such-chart.csv",
    "/api/incidents?hub={}",
    "/api/deployments?hub={}",
    "/api/checks?hub={}",
]
FOREIGN_COMMUNITY_PATHS = [
    "/api/communities/{}",
    "/api/communities/{}/charts/active-users",
    "/api/communities/{}/charts/active-users.csv",
    "/api/communities/{}/charts/no-such-chart",
    "/api/hubs?community={}",
    "/api/incidents?community={}",
]


@pytest.mark.parametrize("path", FOREIGN_HUB_PATHS)
@pytest.mark.parametrize(("username", "foreign_community"), [("lead-a", "hackweek"), ("lead-h", "uni-a")])
def test_a_leader_asking_for_a_foreign_hub_gets_the_missing_hub_404(
    api: dict[str, httpx.Client], hubs: dict[str, list[str]], username: str, foreign_community: str, path: str
) -> None:
    client = api[username]
    for foreign in hubs[foreign_community]:
        assert_same_404(
            client.get(path.format(foreign)), client.get(path.format("no-such-hub")), foreign, "no-such-hub"
        )
        assert api["ops"].get(path.format(foreign)).status_code in (200, 404)  # 404 only for the chart name
    assert (
        api["ops"].get(path.format(hubs[foreign_community][0]).replace("no-such-chart", "uptime")).is_success
    )


@pytest.mark.parametrize("path", FOREIGN_COMMUNITY_PATHS)
@pytest.mark.parametrize(("username", "foreign"), [("lead-a", "hackweek"), ("lead-h", "uni-a")])
def test_a_leader_asking_for_a_foreign_community_gets_the_missing_community_404(
    api: dict[str, httpx.Client], username: str, foreign: str, path: str
) -> None:
    client = api[username]
    assert_same_404(client.get(path.format(foreign)), client.get(path.format("no-such")), foreign, "no-such")
    assert api["ops"].get(path.format(foreign).replace("no-such-chart", "uptime")).is_success


def test_communities_per_role(api: dict[str, httpx.Client], hubs: dict[str, list[str]]) -> None:
    everything = api["ops"].get("/api/communities").json()["communities"]
    assert [(c["name"], c["hubs"]) for c in everything] == list(hubs.items())
    assert all(c["display_name"] for c in everything)
    mine = api["lead-h"].get("/api/communities").json()["communities"]
    assert [(c["name"], c["hubs"]) for c in mine] == [("hackweek", hubs["hackweek"])]


def test_a_leader_reads_their_community(api: dict[str, httpx.Client], hubs: dict[str, list[str]]) -> None:
    community = api["lead-h"].get("/api/communities/hackweek").json()
    assert community["name"] == "hackweek"
    assert [row["name"] for row in community["hubs"]] == hubs["hackweek"]
    assert community["active"]["mau"] >= community["active"]["wau"] >= community["active"]["dau"] > 0
    assert {i["hub"] for i in community["incidents"]} <= set(hubs["hackweek"])
    assert any(i["kind"] == "anomaly" for i in community["incidents"])


def incident_ids(incidents: list[dict[str, Any]]) -> list[int]:
    """Incidents compared by id: an open one's duration grows between two reads."""
    return [incident["id"] for incident in incidents]


def test_incidents_are_those_of_visible_hubs(
    api: dict[str, httpx.Client], hubs: dict[str, list[str]]
) -> None:
    everything = api["ops"].get("/api/incidents").json()["incidents"]
    assert everything, "the seed has incidents"
    for username, community in (("lead-a", "uni-a"), ("lead-h", "hackweek")):
        mine = api[username].get("/api/incidents").json()["incidents"]
        assert {i["hub"] for i in mine} <= set(hubs[community])
        assert incident_ids(mine) == incident_ids([i for i in everything if i["hub"] in hubs[community]])
    # the seed: uni-a down now, hackweek-staging anomaly since yesterday, hackweek was down 3 days ago
    seen = {
        username: [
            (i["hub"], i["kind"], i["open"]) for i in api[username].get("/api/incidents").json()["incidents"]
        ]
        for username in ("ops", "lead-a", "lead-h")
    }
    assert seen["lead-a"] == [("uni-a", "down", True)]
    assert seen["lead-h"] == [("hackweek-staging", "anomaly", True), ("hackweek", "down", False)]
    assert seen["ops"] == seen["lead-a"] + seen["lead-h"]
    anomaly = api["lead-h"].get("/api/incidents", params={"kind": "anomaly"}).json()["incidents"][0]
    assert anomaly["rule"] == "max_running_servers" and anomaly["community"] == "hackweek"
    assert anomaly["cause"] == "12 servers running (cap 10)" and anomaly["resolved_at"] is None


def test_incident_filters(api: dict[str, httpx.Client]) -> None:
    ops = api["ops"]

    def get(**params: object) -> list[dict[str, Any]]:
        response = ops.get("/api/incidents", params=params)
        assert response.status_code == 200, response.text
        return response.json()["incidents"]

    everything = get()
    assert incident_ids(get(state="open")) == incident_ids([i for i in everything if i["open"]])
    assert incident_ids(get(state="resolved")) == incident_ids([i for i in everything if not i["open"]])
    assert {i["kind"] for i in get(kind="anomaly")} == {"anomaly"}
    assert get(kind="no-such-kind") == []
    assert len(get(limit=1)) == 1
    started = [datetime.fromisoformat(i["started_at"]) for i in everything]
    assert started == sorted(started, reverse=True)
    assert [i["hub"] for i in get(since_days=1)] == ["uni-a", "hackweek-staging"]  # not the one 3 days ago
    assert [i["hub"] for i in get(since_days=4, state="resolved")] == ["hackweek"]
    assert [i["hub"] for i in get(community="hackweek", state="open")] == ["hackweek-staging"]
    assert incident_ids(get(hub="hackweek-staging", community="hackweek")) == incident_ids(
        get(hub="hackweek-staging")
    )
    assert get(hub="hackweek-staging", community="uni-a") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("state=closed", "state"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=lots", "limit"),
        ("since_days=0", "since_days"),
        ("since_days=401", "since_days"),
    ],
)
def test_bad_incident_parameters_are_422(api: dict[str, httpx.Client], query: str, field: str) -> None:
    response = api["ops"].get(f"/api/incidents?{query}")
    assert response.status_code == 422
    assert detail(response).startswith(f"{field}: ")
    assert response.json()["errors"]


def test_deployments_and_checks_are_those_of_visible_hubs(
    api: dict[str, httpx.Client], hubs: dict[str, list[str]]
) -> None:
    for kind, per_hub in (("deployments", 3), ("checks", 1)):
        everything = api["ops"].get(f"/api/{kind}", params={"limit": 1000}).json()[kind]
        assert {row["hub"] for row in everything} >= {"uni-a-staging", "hackweek-staging"}
        for username, community in (("lead-a", "uni-a"), ("lead-h", "hackweek")):
            mine = api[username].get(f"/api/{kind}").json()[kind]
            assert mine == [row for row in everything if row["hub"] in hubs[community]]
        one = api["lead-a"].get(f"/api/{kind}", params={"hub": "uni-a-staging"}).json()[kind]
        assert len(one) == per_hub and {row["hub"] for row in one} == {"uni-a-staging"}
        assert len(api["ops"].get(f"/api/{kind}", params={"limit": 1}).json()[kind]) == 1
        assert api["ops"].get(f"/api/{kind}", params={"limit": 0}).status_code == 422
    deployments = api["ops"].get("/api/deployments").json()["deployments"]
    assert "rendered" not in deployments[0] and "settings" not in deployments[0]
    times = [row["started_at"] for row in deployments]
    assert times == sorted(times, reverse=True)


# --------------------------------------------------------------------------- charts


def parse_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def assert_csv_matches(chart: dict[str, Any], text: str) -> None:
    header, *rows = parse_csv(text)
    assert header == chart["columns"]
    assert len(rows) == len(chart["rows"])
    for json_row, csv_row in zip(chart["rows"], rows, strict=True):
        assert len(json_row) == len(csv_row)
        for value, cell in zip(json_row, csv_row, strict=True):
            if value is None:
                assert cell == ""
            elif isinstance(value, str):
                assert cell == value
            else:
                assert float(cell) == pytest.approx(value)


@pytest.mark.parametrize("chart", CHARTS)
@pytest.mark.parametrize(
    ("scope", "filename"),
    [
        ("/api/hubs/uni-a-staging", "uni-a-staging"),
        ("/api/communities/uni-a", "uni-a"),
        ("/api/fleet", "fleet"),
    ],
)
def test_every_chart_as_json_and_csv(
    api: dict[str, httpx.Client], chart: str, scope: str, filename: str
) -> None:
    client = api["lead-a"]

    def compare() -> None:
        data = client.get(f"{scope}/charts/{chart}", params={"days": 7}).json()
        download = client.get(f"{scope}/charts/{chart}.csv", params={"days": 7})
        assert download.status_code == 200
        assert download.headers["content-type"].startswith("text/csv")
        assert download.headers["content-disposition"] == f'attachment; filename="{filename}-{chart}.csv"'
        assert data["name"] == chart and data["title"] and data["y_title"]
        assert data["columns"][0] in ("day", "at")
        assert_csv_matches(data, download.text)

    eventually(compare)


@pytest.mark.parametrize("chart", CHARTS)
def test_a_leaders_fleet_chart_is_their_community_chart(
    api: dict[str, httpx.Client], hubs: dict[str, list[str]], chart: str
) -> None:
    def compare() -> None:
        fleet = api["lead-a"].get(f"/api/fleet/charts/{chart}").json()
        community = api["ops"].get(f"/api/communities/uni-a/charts/{chart}").json()
        assert fleet == community

    eventually(compare)
    if chart == "running-servers":  # one column per hub: only the caller's
        assert api["lead-a"].get(f"/api/fleet/charts/{chart}").json()["columns"] == ["at", *hubs["uni-a"]]
        assert api["ops"].get(f"/api/fleet/charts/{chart}").json()["columns"] == ["at", *all_hubs(hubs)]


def test_day_charts_have_one_row_per_day(api: dict[str, httpx.Client]) -> None:
    for days in (1, 30, 400):
        chart = api["ops"].get("/api/hubs/uni-a-staging/charts/uptime", params={"days": days}).json()
        assert len(chart["rows"]) == days
    assert chart["rows"][-1][0] == datetime.now(UTC).date().isoformat() or len(chart["rows"]) == 400


@pytest.mark.parametrize("days", ["0", "401", "-3", "many", "1.5"])
@pytest.mark.parametrize("path", ["/api/fleet/charts/uptime", "/api/fleet/charts/uptime.csv"])
def test_chart_days_out_of_bounds_are_422(api: dict[str, httpx.Client], path: str, days: str) -> None:
    response = api["ops"].get(path, params={"days": days})
    assert response.status_code == 422
    assert detail(response).startswith("days: ")


@pytest.mark.parametrize("path", ["/api/fleet/charts/nope", "/api/fleet/charts/nope.csv"])
def test_an_unknown_chart_is_404_listing_the_charts(api: dict[str, httpx.Client], path: str) -> None:
    response = api["lead-a"].get(path)
    assert response.status_code == 404
    assert detail(response) == f"no chart named 'nope'; charts: {', '.join(CHARTS)}"


# --------------------------------------------------------------------------- running a check


def test_running_a_check_is_for_operators_and_the_404_comes_first(
    api: dict[str, httpx.Client], hubs: dict[str, list[str]]
) -> None:
    lead = api["lead-a"]
    own = lead.post("/api/hubs/uni-a-staging/checks")
    assert own.status_code == 403 and detail(own) == "only operators may do this"
    foreign = hubs["hackweek"][0]
    assert_same_404(
        lead.post(f"/api/hubs/{foreign}/checks"),
        lead.post("/api/hubs/no-such-hub/checks"),
        foreign,
        "no-such-hub",
    )
    assert api["ops"].post("/api/hubs/no-such-hub/checks").status_code == 404


def test_checking_a_stopped_hub_is_a_409(api: dict[str, httpx.Client]) -> None:
    response = api["ops"].post("/api/hubs/uni-a-staging/checks")
    assert response.status_code == 409
    assert detail(response) == "hub 'uni-a-staging' is not running (stopped); start it with `hubfleet up`"
    assert api["ops"].post("/api/hubs/uni-a-staging/checks", params={"timeout": 1}).status_code == 422


def _operator_only_accounts(root: Path) -> None:
    write_accounts(root, {"ops": "operator"})


@contextlib.contextmanager
def operator_console(root: Path) -> Iterator[httpx.Client]:
    """`hubfleet console` over `root` (accounts: ops, an operator) and a client with an ops token."""
    _operator_only_accounts(root)
    state = root / ".hubfleet"
    state.mkdir(exist_ok=True)
    token = hubfleet("console-token", "create", "ops", fleet=root, check=True).stdout.strip()
    (port,) = free_ports(1)
    process = start_console(root, state, port)
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=180
        ) as client:
            yield client
    finally:
        stop_console(process)


def test_checking_a_kubernetes_hub_is_a_409(tmp_path: Path) -> None:
    root = tmp_path / "k8s"
    shutil.copytree(Path(__file__).parent / "fixtures" / "k8s-fleet", root)
    with operator_console(root) as client:
        response = client.post("/api/hubs/bio-staging/checks")
    assert response.status_code == 409
    assert detail(response) == (
        "hub 'bio-staging' runs on kubernetes cluster 'eks'; the console checks local hubs only"
    )


@pytest.mark.integration
def test_an_operator_runs_the_check_of_a_running_hub(tmp_path: Path) -> None:
    """The real check against a real hub started by `hubfleet up`; the result is recorded."""
    root = copy_demo_fleet(tmp_path / "fleet", keep={"communities/uni-a/hubs/staging.yaml"})
    _operator_only_accounts(root)
    with running_fleet(root), operator_console(root) as client, ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.post, "/api/hubs/uni-a-staging/checks", params={"timeout": 120})
        time.sleep(0.5)  # the check takes seconds: a second one now finds it running
        second = client.post("/api/hubs/uni-a-staging/checks")
        assert second.status_code == 409
        assert detail(second) == "a check of hub 'uni-a-staging' is running already; wait for its result"
        response = first.result()
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["ok"] is True and result["error"] is None and result["hub"] == "uni-a-staging"
        # a dummy hub: the check signs in through the login form with the hub's password first
        assert [s["name"] for s in result["steps"]][:2] == ["sign_in", "create_user"]
        recorded = client.get("/api/checks", params={"hub": "uni-a-staging"}).json()["checks"]
        assert recorded[0]["ok"] is True
        assert recorded[0]["total_seconds"] == pytest.approx(result["total_seconds"])


# --------------------------------------------------------------------------- API tokens


def test_tokens_created_listed_and_revoked_by_their_owner_only(
    cf: ConsoleFleet, api: dict[str, httpx.Client]
) -> None:
    made = api["lead-a"].post("/api/tokens", json={"name": "script", "expires_days": 2})
    assert made.status_code == 201, made.text
    info = made.json()
    token = info.pop("token")
    assert token.startswith("hf_") and token.startswith(info["prefix"])
    assert info["username"] == "lead-a" and info["name"] == "script" and info["active"] is True
    expires = datetime.fromisoformat(info["expires_at"]) - datetime.fromisoformat(info["created_at"])
    assert expires == timedelta(days=2)
    with httpx.Client(base_url=cf.url, headers={"Authorization": f"Bearer {token}"}) as script:
        assert script.get("/api/me").json()["username"] == "lead-a"
        listed = api["lead-a"].get("/api/tokens").json()["tokens"]
        assert info["id"] in [t["id"] for t in listed]
        assert all("token" not in t for t in listed)
        assert all(t["username"] == "lead-a" for t in listed)
        assert info["id"] not in [t["id"] for t in api["ops"].get("/api/tokens").json()["tokens"]]
        # somebody else's token: not found, whoever asks (operators too), and it keeps working
        for other in ("lead-h", "ops"):
            refused = api[other].delete(f"/api/tokens/{info['id']}")
            assert refused.status_code == 404 and detail(refused) == f"no active token {info['id']} of yours"
        assert script.get("/api/me").status_code == 200
        revoked = script.delete(f"/api/tokens/{info['id']}")  # a token may revoke itself
        assert revoked.status_code == 204 and revoked.content == b""
        assert script.get("/api/me").status_code == 401
    assert api["lead-a"].delete(f"/api/tokens/{info['id']}").status_code == 404
    listed = {t["id"]: t for t in api["lead-a"].get("/api/tokens").json()["tokens"]}
    assert listed[info["id"]]["active"] is False and listed[info["id"]]["revoked_at"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expires_days": 0}, "expires_days"),
        ({"expires_days": 3651}, "expires_days"),
        ({"expires_days": "soon"}, "expires_days"),
        ({"name": "x" * 201}, "name"),
        ({"name": "x", "scopes": ["admin"]}, "scopes"),
    ],
)
def test_bad_token_requests_are_422(api: dict[str, httpx.Client], body: dict[str, Any], field: str) -> None:
    response = api["ops"].post("/api/tokens", json=body)
    assert response.status_code == 422
    assert detail(response).startswith(f"{field}: ")


@pytest.mark.parametrize("token_id", ["0", "-1", "abc", str(2**70)])
def test_bad_token_ids_are_422(api: dict[str, httpx.Client], token_id: str) -> None:
    assert api["ops"].delete(f"/api/tokens/{token_id}").status_code == 422


def test_a_token_without_expiry(api: dict[str, httpx.Client]) -> None:
    made = api["ops"].post("/api/tokens", json={})
    assert made.status_code == 201
    assert made.json()["expires_at"] is None and made.json()["name"] == ""
    assert api["ops"].delete(f"/api/tokens/{made.json()['id']}").status_code == 204


# --------------------------------------------------------------------------- sessions and CSRF


def test_session_callers_need_the_csrf_header_to_change_things(cf: ConsoleFleet) -> None:
    with contextlib.closing(signed_in_client(cf, "ops")) as browser:
        csrf = browser.headers.pop("X-CSRF-Token")
        assert browser.get("/api/hubs").status_code == 200  # reading needs no CSRF token
        for headers in ({}, {"X-CSRF-Token": "wrong"}):
            refused = browser.post("/api/tokens", json={"name": "x"}, headers=headers)
            assert refused.status_code == 403 and "X-CSRF-Token" in detail(refused)
            assert browser.delete("/api/tokens/1", headers=headers).status_code == 403
            assert browser.post("/api/hubs/uni-a-staging/checks", headers=headers).status_code == 403
        made = browser.post("/api/tokens", json={"name": "from the browser"}, headers={"X-CSRF-Token": csrf})
        assert made.status_code == 201
        revoked = browser.delete(f"/api/tokens/{made.json()['id']}", headers={"X-CSRF-Token": csrf})
        assert revoked.status_code == 204


def test_a_bearer_token_needs_no_csrf_header(api: dict[str, httpx.Client]) -> None:
    made = api["lead-h"].post("/api/tokens", json={"name": "no csrf"})
    assert made.status_code == 201
    assert api["lead-h"].delete(f"/api/tokens/{made.json()['id']}").status_code == 204


# --------------------------------------------------------------------------- sign-in


def test_a_wrong_password_is_a_401_page(cf: ConsoleFleet) -> None:
    with httpx.Client(base_url=cf.url) as client:
        response = sign_in(client, "lead-h", "not-the-password")
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("text/html")
        assert "Wrong username or password" in response.text
        assert client.get("/api/me").status_code == 401


@contextlib.contextmanager
def extra_account(cf: ConsoleFleet, username: str, password: str) -> Iterator[str]:
    """`username` as a leader of uni-a in fleet.yaml, with `password`, until the block ends (then removed).
    Yields an API token of the account, made with the CLI; the block starts once the console accepts it
    (polling with a token, not with sign-ins: failed sign-ins would count towards the lockout)."""
    fleet_yaml = cf.root / "fleet.yaml"
    original = fleet_yaml.read_text()
    account = f"    - username: {username}\n      role: community-leader\n      communities: [uni-a]\n"
    fleet_yaml.write_text(original.rstrip("\n") + "\n" + account)
    try:
        hubfleet("console-password", username, "--stdin", fleet=cf.root, input=password + "\n", check=True)
        token = hubfleet("console-token", "create", username, fleet=cf.root, check=True).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        wait_for(
            lambda: httpx.get(f"{cf.url}/api/me", headers=headers).status_code == 200,
            "the console to load the new account",
        )
        yield token
    finally:
        fleet_yaml.write_text(original)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = RELOAD_SECONDS) -> float:
    """Seconds until `condition()` held (polled every 0.1 s)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - start


def _can_sign_in(cf: ConsoleFleet, username: str, password: str) -> bool:
    with httpx.Client(base_url=cf.url) as client:
        return sign_in(client, username, password).status_code == 303


def test_five_failed_sign_ins_lock_the_account(cf: ConsoleFleet) -> None:
    with extra_account(cf, "locky", "locky-password-1"), httpx.Client(base_url=cf.url) as client:
        for _ in range(5):
            assert sign_in(client, "locky", "wrong-password").status_code == 401
        locked = sign_in(client, "locky", "locky-password-1")  # even the right password now
        assert locked.status_code == 429
        assert "Too many failed sign-ins" in locked.text
        assert client.get("/api/me").status_code == 401
    assert _can_sign_in(cf, "lead-a", cf.passwords["lead-a"])  # other accounts are not affected


def test_signing_out_ends_the_session(cf: ConsoleFleet) -> None:
    with contextlib.closing(signed_in_client(cf, "lead-h")) as browser:
        cookie = browser.cookies["hubfleet_session"]
        assert browser.get("/api/me").status_code == 200
        out = browser.post("/logout", data={"csrf_token": browser.headers["X-CSRF-Token"]})
        assert out.status_code == 303 and out.headers["location"] == "/login"
    with httpx.Client(base_url=cf.url, cookies={"hubfleet_session": cookie}) as old:
        assert old.get("/api/me").status_code == 401
        page = old.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"].startswith("/login")


def test_an_account_removed_from_fleet_yaml_loses_access(cf: ConsoleFleet) -> None:
    with (
        extra_account(cf, "leaving", "leaving-password-1") as token,
        httpx.Client(base_url=cf.url) as browser,
    ):
        assert sign_in(browser, "leaving", "leaving-password-1").status_code == 303
        headers = {"Authorization": f"Bearer {token}"}
        assert browser.get("/api/me").json()["username"] == "leaving"
        assert httpx.get(f"{cf.url}/api/hubs", headers=headers).status_code == 200
        fleet_yaml = cf.root / "fleet.yaml"
        fleet_yaml.write_text(
            fleet_yaml.read_text().replace("    - username: leaving\n", "    - username: gone\n")
        )
        waited = wait_for(
            lambda: (
                browser.get("/api/me").status_code == 401
                and httpx.get(f"{cf.url}/api/hubs", headers=headers).status_code == 401
            ),
            "the removed account to lose access",
        )
        assert waited < RELOAD_SECONDS
        assert browser.get("/", headers={"Accept": "text/html"}).status_code == 303
        assert not _can_sign_in(cf, "leaving", "leaving-password-1")


@pytest.mark.parametrize(
    ("next_url", "lands_on"),
    [
        ("https://evil.example", "/"),
        ("//evil.example/path", "/"),
        ("http:evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/hubs/uni-a-staging", "/hubs/uni-a-staging"),
    ],
)
def test_sign_in_never_redirects_off_site(cf: ConsoleFleet, next_url: str, lands_on: str) -> None:
    with httpx.Client(base_url=cf.url) as client:
        response = sign_in(client, "lead-a", cf.passwords["lead-a"], next_url=next_url)
        assert response.status_code == 303
        assert response.headers["location"] == lands_on
        again = client.get("/login", params={"next": next_url})  # already signed in
        assert again.status_code == 303 and again.headers["location"] == lands_on

"""The console's event pages and /api/events (issue 17, section 5), over the real `hubfleet console` process.

The demo fleet copy of console_helpers (accounts, a month of seeded monitoring rows, no hub running: pages
read the store, as they do in the daemon) gets two more events on uni-a's prod hub beside the demo's
upcoming one: one on now (ready mode open, a readiness test, spawns in the hub's histogram over the last
minutes, one of them failed) and one past, whose report `hubfleet event report` makes from the seeded
rows. The rows are of the kinds the daemon writes (hub samples with the histogram the collector parses,
ready-mode windows, readiness tests). Checked over HTTP for every role, and in Chromium for a leader.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from console_helpers import ConsoleFleet, console_fleet, signed_in_client
from fleet_helpers import CHROMIUM, CHROMIUM_ARGS, hubfleet, wait_for
from hubfleet.store import events as stored
from hubfleet.store import open_store
from hubfleet.store.models import HubSample

HUB = "uni-a"
LIVE, PAST, DEMO = "live-lab", "past-lab", "phys101-first-lab"
REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"


def _histogram(ok: int, failed: int) -> dict[str, object]:
    """The hub's spawn histogram as the collector stores it (cumulative; buckets cut at the full count)."""
    found: dict[str, object] = {
        "success": {"count": ok, "sum": 0.8 * ok, "buckets": [[0.5, ok // 2], [1.0, ok - 1], [2.5, ok]]}
    }
    if failed:
        found["failure/too-many-users"] = {"count": failed, "sum": 0.01, "buckets": [[0.5, failed]]}
    return found


def _add_events(cf: ConsoleFleet, now: datetime) -> None:
    live_start, past_start = now - timedelta(minutes=30), now - timedelta(hours=3)
    events = "".join(
        f"  - name: {name}\n    hub: {HUB}\n    start: {start.isoformat(timespec='seconds')}\n"
        f"    end: {(start + length).isoformat(timespec='seconds')}\n    attendees: 40\n"
        for name, start, length in (
            (LIVE, live_start, timedelta(hours=2)),
            (PAST, past_start, timedelta(hours=2)),
        )
    )
    community = cf.root / "communities" / "uni-a" / "community.yaml"
    community.write_text(community.read_text() + events)
    with open_store(cf.state_dir) as store:
        with store.session() as session, session.begin():
            # the hub's counts: 10 spawns before the last 10 minutes, 30 more (and a refused one) since
            for minutes_ago, ok, failed in ((12, 10, 0), (6, 25, 0), (0, 40, 1)):
                session.add(
                    HubSample(
                        hub=HUB,
                        at=now - timedelta(minutes=minutes_ago),
                        running_servers=17,
                        users=40,
                        spawn_histogram=_histogram(ok, failed),
                    )
                )
        window = stored.start_window(store, HUB, LIVE, "schedule", {"backend": "local"})
        assert window.open
        stored.record_test(store, HUB, LIVE, True, {"users": 10, "p95_seconds": 0.9})


@pytest.fixture(scope="module")
def cf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleFleet]:
    with console_fleet(tmp_path_factory.mktemp("console-events")) as running:
        _add_events(running, datetime.now(UTC))
        hubfleet("event", "report", HUB, PAST, fleet=running.root, check=True)
        with httpx.Client(base_url=running.url, headers=_bearer(running, "ops"), timeout=30) as api:
            names = lambda: {e["name"] for e in api.get("/api/events").json()["events"]}  # noqa: E731
            wait_for(lambda: LIVE in names(), timeout=20)  # the console re-reads the fleet's files
        yield running


def _bearer(cf: ConsoleFleet, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {cf.tokens[who]}"}


def _api(cf: ConsoleFleet, who: str, path: str) -> httpx.Response:
    return httpx.get(cf.url + path, headers=_bearer(cf, who), timeout=30)


def _listed(cf: ConsoleFleet, who: str) -> set[tuple[str, str, str]]:
    return {(e["hub"], e["name"], e["phase"]) for e in _api(cf, who, "/api/events").json()["events"]}


def test_events_list_by_role(cf: ConsoleFleet) -> None:
    ours = {(HUB, LIVE, "on"), (HUB, PAST, "past"), (HUB, DEMO, "upcoming")}
    everyone = _listed(cf, "ops")
    assert _listed(cf, "lead-a") == ours
    hackweek = _listed(cf, "lead-h")
    assert hackweek and {hub for hub, _, _ in hackweek} <= {"hackweek", "hackweek-staging"}
    assert everyone == ours | hackweek
    assert httpx.get(cf.url + "/api/events", timeout=30).status_code == 401


def test_live_event_json(cf: ConsoleFleet) -> None:
    live = _api(cf, "lead-a", f"/api/events/{HUB}/{LIVE}").json()
    assert live["phase"] == "on" and live["attendees"]["expected"] == 40
    assert live["running_servers"]["now"] == 17
    recent = live["spawns_recent"]
    assert recent["minutes"] == 10
    assert recent["spawns"] == 30 and recent["failures"] == {"failure/too-many-users": 1}
    assert 0.5 <= recent["p50_seconds"] <= recent["p95_seconds"] <= 2.5
    assert live["ready_mode"]["on"] is True and live["ready_mode"]["current"]["started_by"] == "schedule"
    assert live["last_test"]["passed"] is True
    assert live["report"] is None
    assert _api(cf, "lead-a", f"/api/events/{HUB}/{LIVE}/report").status_code == 404


def test_past_event_report_json(cf: ConsoleFleet) -> None:
    report = _api(cf, "ops", f"/api/events/{HUB}/{PAST}/report").json()
    figures = report["report"]
    assert figures["complete"] is True and figures["event"] == PAST
    assert figures["server_hours"] > 0 and figures["peak"]["servers"] >= 1  # from the seeded month
    assert report["sent_to"] is None  # made by hand without --send
    assert _api(cf, "lead-a", f"/api/events/{HUB}/{PAST}").json()["report"]["report"] == figures


def test_other_communities_leader_gets_404(cf: ConsoleFleet) -> None:
    for path in (f"/api/events/{HUB}/{LIVE}", f"/api/events/{HUB}/{PAST}/report", f"/api/events/{HUB}/nope"):
        response = _api(cf, "lead-h", path)
        assert response.status_code == 404, path
        assert response.json() == {"detail": f"no hub named '{HUB}'"}  # as if there were no such hub
    assert _api(cf, "ops", f"/api/events/{HUB}/nope").status_code == 404
    client = signed_in_client(cf, "lead-h")
    with contextlib.closing(client):
        assert client.get(f"/events/{HUB}/{LIVE}").status_code == 404
        page = client.get("/events")
        assert page.status_code == 200 and LIVE not in page.text


def test_pages_over_http(cf: ConsoleFleet) -> None:
    client = signed_in_client(cf, "lead-a")
    with contextlib.closing(client):
        page = client.get("/events")
        assert page.status_code == 200
        for name in (LIVE, PAST, DEMO):
            assert f'href="/events/{HUB}/{name}"' in page.text
        live = client.get(f"/events/{HUB}/{LIVE}").text
        assert "40" in live and "on now" in live and "too-many-users: 1" in live
        past = client.get(f"/events/{HUB}/{PAST}").text
        assert 'data-testid="peak-users"' in past and "Server-hours" in past
    assert httpx.get(f"{cf.url}/events/{HUB}/{LIVE}", timeout=30).status_code in (303, 307)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_event_pages_in_chromium(cf: ConsoleFleet) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(base_url=cf.url, viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on(
                "console",
                lambda msg: (
                    errors.append(f"{msg.text} ({msg.location.get('url')})") if msg.type == "error" else None
                ),
            )
            page.goto("/events")
            page.get_by_label("Username").fill("lead-a")
            page.get_by_label("Password").fill(cf.passwords["lead-a"])
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{cf.url}/events")
            assert page.get_by_role("link", name="Events").get_attribute("aria-current") == "page"
            page.screenshot(path=str(SCREENSHOTS / "leader-events.png"), full_page=True)
            page.get_by_role("link", name=LIVE).click()
            page.wait_for_url(re.compile(f"/events/{HUB}/{LIVE}$"))
            assert page.get_by_test_id("attendees").inner_text().split()[-3:] == ["0", "/", "40"]
            assert page.get_by_test_id("running").inner_text().endswith("17")
            assert "passed" in page.get_by_test_id("last-test").inner_text()
            assert "on" in page.get_by_test_id("ready-mode").inner_text()
            page.screenshot(path=str(SCREENSHOTS / "leader-event-live.png"), full_page=True)
            page.goto(f"/events/{HUB}/{PAST}")
            assert float(page.get_by_test_id("server-hours").inner_text()) > 0
            href = page.get_by_role("link", name=f"/api/events/{HUB}/{PAST}/report").get_attribute("href")
            answer = page.request.get(f"{cf.url}{href}")  # with the page's session cookie
            assert answer.ok and answer.json()["report"]["event"] == PAST
            context.close()
        finally:
            browser.close()
    assert not errors, errors

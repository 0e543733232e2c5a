"""The web console in a real browser: Debian's Chromium (/usr/bin/chromium) driven by Playwright.

Signs in through the real login form as an operator and as a community leader, opens every page, waits
until every chart is drawn (`.chart[data-drawn]`, set by static/console.js), and checks what each role
sees: the leader only their community's hubs, and the 404 page for anyone else's hub or community; the
"Run check" button only for operators. No page may log a JavaScript error (a Content-Security-Policy
violation included). Creates and revokes an API token on the Tokens page, then signs out.

A full-page screenshot of every page visited is saved in test-artifacts/screenshots/ at the repository root
(kept out of git) for people to look at. Playwright never downloads a browser here: the module is skipped
when /usr/bin/chromium is missing (scripts/install-debian-deps.sh installs it)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from console_helpers import ConsoleFleet, console_fleet
from fleet_helpers import CHROMIUM, CHROMIUM_ARGS

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHART_TIMEOUT_MS = 30_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (scripts/install-debian-deps.sh)",
)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")


@pytest.fixture(scope="module")
def cf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleFleet]:
    with console_fleet(tmp_path_factory.mktemp("console-browser")) as running:
        yield running


@pytest.fixture(scope="module")
def hubs_by_community(cf: ConsoleFleet) -> dict[str, list[str]]:
    """Hub names per community, from the fleet's own files (the source of truth for the console)."""
    return cf.hubs_by_community


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Visit:
    """One signed-in browser tab, with the JavaScript errors it logged."""

    def __init__(self, browser: object, cf: ConsoleFleet, who: str):
        self.cf = cf
        self.who = who
        self.context = browser.new_context(  # type: ignore[attr-defined]
            base_url=cf.url,
            viewport={"width": 1400, "height": 900},
            locale="en-GB",
            timezone_id="UTC",
            permissions=["clipboard-read", "clipboard-write"],
        )
        self.context.set_default_timeout(CHART_TIMEOUT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.expected_failures: set[str] = set()
        self.page.on("console", self._console)

    def _console(self, msg: object) -> None:
        if msg.type != "error":  # type: ignore[attr-defined]
            return
        url = (msg.location or {}).get("url", "")  # type: ignore[attr-defined]
        if url in self.expected_failures and msg.text.startswith("Failed to load resource"):  # type: ignore[attr-defined]
            return  # the 404 page we asked for
        self.errors.append(f"console: {msg.text} ({url})")  # type: ignore[attr-defined]

    def close(self) -> None:
        self.context.close()

    def sign_in(self, username: str) -> None:
        page = self.page
        page.goto("/")
        assert re.search(r"/login\?next=/$", page.url), f"not sent to the sign-in page: {page.url}"
        self.shot("login")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(self.cf.passwords[username])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{self.cf.url}/")
        assert username in page.get_by_test_id("signed-in-user").inner_text()

    def open(self, path: str, name: str, status: int = 200) -> None:
        if status != 200:
            self.expected_failures.add(self.cf.url + path)
        response = self.page.goto(path)
        assert response is not None and response.status == status, (
            f"{path}: {response.status if response else None}, wanted {status}"
        )
        self.wait_for_charts()
        self.shot(name)

    def wait_for_charts(self) -> None:
        """Every chart drawn (or 'no data yet' shown): console.js sets data-drawn on each."""
        page = self.page
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('.chart')).every(c => c.hasAttribute('data-drawn'))",
            timeout=CHART_TIMEOUT_MS,
        )
        states = page.eval_on_selector_all(
            ".chart", "charts => charts.map(c => [c.dataset.src, c.dataset.drawn, c.innerText])"
        )
        failed = [(src, text) for src, drawn, text in states if drawn != "true"]
        assert not failed, f"charts not drawn on {page.url}: {failed}"

    def plotted(self) -> int:
        """How many charts hold a Plotly plot (rather than a 'no data yet' message)."""
        return self.page.locator(".chart.js-plotly-plot").count()

    def hub_rows(self) -> list[str]:
        rows = self.page.eval_on_selector_all(
            "table.hubs-table tbody tr[data-hub]", "rows => rows.map(r => r.dataset.hub)"
        )
        return sorted(rows)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(SCREENSHOTS / f"{self.who}-{name}.png"), full_page=True)

    def sign_out(self) -> None:
        page = self.page
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(re.compile(r"/login"))
        page.goto("/")
        assert "/login" in page.url, "still signed in after signing out"
        self.shot("signed-out")


@pytest.fixture
def visit(browser: object, cf: ConsoleFleet, request: pytest.FixtureRequest) -> Iterator[Visit]:
    opened: list[Visit] = []

    def make(who: str) -> Visit:
        v = Visit(browser, cf, who)
        opened.append(v)
        return v

    yield make  # type: ignore[misc]
    for v in opened:
        v.close()
    for v in opened:
        assert not v.errors, f"JavaScript errors in {v.who}'s pages: {v.errors}"


def test_operator_sees_the_whole_fleet(
    visit, cf: ConsoleFleet, hubs_by_community: dict[str, list[str]]
) -> None:
    v = visit("operator")
    v.sign_in("ops")
    all_hubs = sorted(h for names in hubs_by_community.values() for h in names)

    v.open("/", "overview")
    assert v.hub_rows() == all_hubs
    assert v.page.locator(".stats").first.is_visible()
    assert v.plotted() == 1, "the operator's overview has the fleet's active-users chart"

    v.open("/?community=hackweek", "overview-filtered")
    assert v.hub_rows() == hubs_by_community["hackweek"]

    for community in sorted(hubs_by_community):
        v.open(f"/communities/{community}", f"community-{community}")
        assert v.page.locator(".chart").count() == 2
        assert v.hub_rows() == hubs_by_community[community]

    for hub in all_hubs:
        v.open(f"/hubs/{hub}", f"hub-{hub}")
        assert v.page.locator(".chart").count() == 5
        assert v.page.get_by_role("link", name=re.compile("Download CSV")).count() == 5
        run = v.page.get_by_role("button", name="Run check")
        assert run.count() == 1 and run.is_enabled(), f"operators get a Run check button on {hub}"

    # a seeded hub: every chart has data, so every chart is a Plotly plot
    v.open("/hubs/uni-a-staging?days=7", "hub-uni-a-staging-7-days")
    assert v.plotted() == 5
    assert "days=7" in v.page.get_by_role("link", name=re.compile("Download CSV")).first.get_attribute("href")
    csv = v.page.request.get(f"{cf.url}/api/hubs/uni-a-staging/charts/uptime.csv?days=7")
    assert csv.ok and csv.text().startswith("day,uptime_percent")

    # Run check: the button posts with the page's CSRF token; no hub runs here, so the API says so (409)
    v.open("/hubs/uni-a-staging", "hub-uni-a-staging")
    v.expected_failures.add(f"{cf.url}/api/hubs/uni-a-staging/checks")
    run = v.page.get_by_role("button", name="Run check")
    run.click()
    result = v.page.locator("#check-result")
    result.filter(has_text="Could not run the check").wait_for()
    assert "not running" in result.inner_text(), result.inner_text()
    v.page.get_by_role("button", name="Run check").wait_for()
    assert run.is_enabled()
    v.shot("hub-run-check-refused")

    v.open("/incidents", "incidents")
    assert v.page.locator("tr[data-incident]").count() >= 1
    v.open("/incidents?state=open&kind=anomaly", "incidents-open-anomalies")
    kinds = v.page.locator("tr[data-incident] td:nth-child(4)").all_inner_texts()
    assert kinds and all(k.startswith("anomaly") for k in kinds), kinds

    # the filter form itself (it sends empty fields for "all" and "any time")
    v.open("/incidents", "incidents")
    v.page.get_by_label("State").select_option("open")
    with v.page.expect_navigation():
        v.page.get_by_role("button", name="Filter").click()
    assert "state=open" in v.page.url
    states = v.page.locator("tr[data-incident] td:nth-child(5)").all_inner_texts()
    assert states and all(s.startswith("open") for s in states), states
    v.shot("incidents-open")

    v.open("/hubs/no-such-hub", "not-found", status=404)
    assert v.page.get_by_role("heading", name="Not found").is_visible()

    _create_and_revoke_token(v)
    v.sign_out()


def test_leader_sees_only_their_community(
    visit, cf: ConsoleFleet, hubs_by_community: dict[str, list[str]]
) -> None:
    v = visit("leader")
    v.sign_in("lead-a")
    own = hubs_by_community["uni-a"]
    foreign = hubs_by_community["hackweek"]

    v.open("/", "overview")
    assert v.hub_rows() == own
    body = v.page.locator("main").inner_text()
    for hub in foreign:
        assert hub not in body, f"a leader of uni-a sees {hub} on the overview"
    assert v.page.locator(".chart").count() == 0

    v.open("/communities/uni-a", "community-uni-a")
    assert v.hub_rows() == own
    for hub in own:
        v.open(f"/hubs/{hub}", f"hub-{hub}")
        assert v.page.locator(".chart").count() == 5
        assert v.page.get_by_role("button", name="Run check").count() == 0, "leaders cannot run checks"

    for path, name in [
        (f"/hubs/{foreign[0]}", "foreign-hub"),
        ("/communities/hackweek", "foreign-community"),
        (f"/incidents?hub={foreign[0]}", "foreign-incidents"),
    ]:
        v.open(path, name, status=404)
        assert v.page.get_by_role("heading", name="Not found").is_visible()
        assert v.page.locator("table").count() == 0 and v.page.locator(".chart").count() == 0

    v.open("/incidents", "incidents")
    shown = set(v.page.locator("tr[data-incident] td:nth-child(2)").all_inner_texts())
    assert shown <= set(own), f"a leader of uni-a sees incidents of {shown - set(own)}"

    v.open("/tokens", "tokens")
    v.sign_out()


def _create_and_revoke_token(v: Visit) -> None:
    page = v.page
    v.open("/tokens", "tokens")
    page.get_by_label("Name", exact=True).fill("browser-test")
    page.get_by_label("Expires after (days)").fill("7")
    page.get_by_role("button", name="Create token").click()
    token = page.locator("#new-token").input_value()
    assert token.startswith("hf_"), token
    v.shot("token-created")
    page.get_by_role("button", name="Copy", exact=True).click()
    page.get_by_text("Copied").or_(page.get_by_text("Selected")).wait_for()

    # the token works for the API, and is never on the page again
    me = page.request.get(f"{v.cf.url}/api/me", headers={"Authorization": f"Bearer {token}"})
    assert me.ok and me.json()["username"] == "ops"
    page.goto("/tokens")
    assert token not in page.content()

    row = page.locator("tr[data-token]", has_text="browser-test")
    row.get_by_role("button", name=re.compile("Revoke")).click()
    page.wait_for_url(f"{v.cf.url}/tokens")
    assert "revoked" in page.locator("tr[data-token]", has_text="browser-test").inner_text()
    gone = page.request.get(f"{v.cf.url}/api/me", headers={"Authorization": f"Bearer {token}"})
    assert gone.status == 401
    v.shot("token-revoked")

"""The console's cost pages, /api/costs, a community's costs and invoices, and invoice downloads (issue 18,
section 5), over the real `hubfleet console` process.

The demo fleet copy of console_helpers (accounts: ops = operator, lead-a = leader of uni-a, lead-h = leader
of hackweek) gets last month's costs the way the daemon and the CLI make them: server sessions with their
requests (the local cluster's price sheet turns them into cost), a billing export's lines for the account the
local cluster claims (a tagged row, shared compute and network, a credit, a row of no cluster), users in
JupyterHub groups; then `allocate_month` allocates the month and `generate_month` issues its invoices. The
hackweek hub's heavy use passes its small budget (25 EUR); uni-a stays well within its 400 USD.
"""

from __future__ import annotations

import calendar
import contextlib
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from console_helpers import ConsoleFleet, console_fleet, signed_in_client
from fleet_helpers import CHROMIUM, CHROMIUM_ARGS
from hubfleet.config.validate import load_fleet
from hubfleet.costs.allocation import allocate_month
from hubfleet.costs.budgets import budget_statuses
from hubfleet.costs.invoices import generate_month
from hubfleet.costs.money import to_micros
from hubfleet.daemon.cost_watch import budget_changes
from hubfleet.monitor.usage import people_in_month
from hubfleet.store import open_store
from hubfleet.store.costs import CostImport, CostLine
from hubfleet.store.models import HubUserGroup, ServerSession

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
ACCOUNT = "111122223333"
"""The billing account the demo's local cluster claims (clusters/local.yaml `costs.billing_accounts`)."""
GIB = 2**30
FIRST = (datetime.now(UTC).date().replace(day=1) - timedelta(days=1)).replace(day=1)
MONTH = FIRST.strftime("%Y-%m")
"""Last month: a whole month, so its forecast is what it spent."""
EXPORT = [  # (day of month, hub, cluster, category, service, amount USD)
    (5, "uni-a", "local", "Usage", "Cloud Storage", "12.345678"),
    (6, None, "local", "Usage", "Compute Engine", "30.00"),
    (7, None, "local", "Usage", "Networking", "4.50"),
    (8, None, None, "Usage", "Support", "1.25"),
    (9, "uni-a", "local", "Credit", "Cloud Storage", "-2.00"),
]
BILLED = sum(Decimal(row[5]) for row in EXPORT)
UNALLOCATED = Decimal("1.25")


def _at(day: int, hour: int) -> datetime:
    return datetime.combine(FIRST.replace(day=day), datetime.min.time(), UTC) + timedelta(hours=hour)


def _sessions() -> list[object]:
    """hackweek: four users 8 h a day for ten days on 2 cores and 4 GiB (well over its 25 EUR);
    uni-a: three users 2 h a day for twenty days on 1 core and 2 GiB; the staging hubs a little."""
    rows: list[object] = []
    plan = (
        ("hackweek", ["h0", "h1", "h2", "h3"], range(1, 11), 8, 2.0, 4),
        ("uni-a", ["a0", "a1", "a2"], range(1, 21), 2, 1.0, 2),
        ("uni-a-staging", ["s0"], range(3, 4), 1, 1.0, 1),
        ("hackweek-staging", ["t0"], range(4, 5), 1, 1.0, 1),
    )
    for hub, users, days, hours, cpu, gib in plan:
        for day in days:
            for user in users:
                rows.append(
                    ServerSession(
                        hub=hub,
                        username=user,
                        server_name="",
                        started_at=_at(day, 9),
                        stopped_at=_at(day, 9 + hours),
                        environment="python",
                        cpu_request=cpu,
                        memory_request_bytes=gib * GIB,
                    )
                )
    seen = _at(1, 9)
    for user, group in (("a0", "physics101"), ("a1", "physics101"), ("a1", "tutors")):
        rows.append(HubUserGroup(hub="uni-a", username=user, group=group, first_seen=seen, last_seen=seen))
    return rows


def _export(session: Any) -> None:
    """The billing export of ACCOUNT for MONTH as `hubfleet costs import` stores it: the import and its
    rows summed per day, hub and service (the tagged ones with their hub, the shared ones with the
    cluster only, the unallocated one with neither)."""
    imported = CostImport(
        account=ACCOUNT,
        month=MONTH,
        currency="USD",
        rows=len(EXPORT),
        billed_micros=to_micros(BILLED),
        effective_micros=None,
        files=[{"name": "focus.csv", "sha256": "0" * 64, "rows": len(EXPORT)}],
        raw_path="",
        imported_at=_at(20, 0),
        actor="tests",
    )
    session.add(imported)
    session.flush()
    for day, hub, cluster, category, service, figure in EXPORT:
        session.add(
            CostLine(
                import_id=imported.id,
                account=ACCOUNT,
                sub_account="",
                month=MONTH,
                day=FIRST.replace(day=day),
                cluster=cluster,
                hub=hub,
                category=category,
                service=service,
                currency="USD",
                billed_micros=to_micros(Decimal(figure)),
                effective_micros=None,
                list_micros=None,
                rows=1,
            )
        )


def _add_costs(cf: ConsoleFleet) -> None:
    fleet = load_fleet(cf.root)
    with open_store(cf.state_dir) as store:
        with store.session() as session, session.begin():
            session.add_all(_sessions())
            _export(session)
        allocation = allocate_month(store, fleet, MONTH, state_dir=cf.state_dir)
        assert all(account.ok for account in allocation.accounts), allocation
        outcomes = generate_month(
            store, fleet, MONTH, state_dir=cf.state_dir, people_fn=people_in_month, actor="tests"
        )
        assert all(o.record is not None and not o.error for o in outcomes), outcomes
        # what the daemon's cost watch does with the month's budgets: hackweek's raise `cost` incidents
        opened = budget_changes(store, budget_statuses(store, fleet, MONTH), datetime.now(UTC))
        assert {incident.community for _, incident in opened} == {"hackweek"}


@pytest.fixture(scope="module")
def cf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleFleet]:
    with console_fleet(tmp_path_factory.mktemp("console-costs")) as running:
        _add_costs(running)
        yield running


def _api(cf: ConsoleFleet, who: str, path: str) -> httpx.Response:
    return httpx.get(cf.url + path, headers={"Authorization": f"Bearer {cf.tokens[who]}"}, timeout=30)


def _json(cf: ConsoleFleet, who: str, path: str) -> Any:
    response = _api(cf, who, path)
    assert response.status_code == 200, (path, response.status_code, response.text[:500])
    return response.json()


def _money(value: dict[str, str]) -> Decimal:
    return Decimal(value["amount"])


def _by_currency(amounts: list[dict[str, str]]) -> dict[str, Decimal]:
    return {a["currency"]: _money(a) for a in amounts}


# --------------------------------------------------------------------------- JSON API


def test_operator_sees_every_community_and_the_bills_add_up(cf: ConsoleFleet) -> None:
    view = _json(cf, "ops", f"/api/costs?month={MONTH}")
    assert view["month"] == MONTH
    assert [c["name"] for c in view["communities"]] == ["hackweek", "uni-a"]
    checks = {check["account"]: check for check in view["checks"]}
    assert set(checks) == {ACCOUNT, "price-sheet:local"}
    for check in checks.values():
        assert check["ok"] is True and check["problems"] == []
        assert check["billed"] == check["allocated"]
    exported = checks[ACCOUNT]
    assert _money(exported["billed"]) == BILLED.quantize(Decimal("0.01")) == Decimal("46.10")
    assert _money(exported["unallocated"]) == UNALLOCATED
    assert _money(checks["price-sheet:local"]["billed"]) > Decimal(120)  # the fixed 120 USD and the use
    # every community's cost is its hubs' total, and the fleet's total theirs
    total = Decimal(0)
    for row in view["communities"]:
        detail = _json(cf, "ops", f"/api/communities/{row['name']}/costs?month={MONTH}")
        hubs = sum((_money(h["total"]) for h in detail["hubs"]), Decimal(0))
        assert _by_currency(row["cost"]) == {"USD": hubs} == _by_currency(detail["cost"])
        total += hubs
    assert _by_currency(view["total"]) == {"USD": total}
    # what the communities carry plus the unallocated line is every bill, to the cent
    billed = sum((_money(c["billed"]) for c in checks.values()), Decimal(0))
    assert total + UNALLOCATED == billed
    assert view["currencies"] == ["USD"]


def test_a_leader_sees_only_their_community(cf: ConsoleFleet) -> None:
    view = _json(cf, "lead-a", f"/api/costs?month={MONTH}")
    assert [c["name"] for c in view["communities"]] == ["uni-a"]
    assert view["checks"] is None  # billing accounts span communities: operators only
    ops_row = next(
        c for c in _json(cf, "ops", f"/api/costs?month={MONTH}")["communities"] if c["name"] == "uni-a"
    )
    assert view["communities"][0] == ops_row
    chart = _json(cf, "lead-a", f"/api/costs/charts/daily-cost?month={MONTH}")
    assert chart["columns"] == ["day", "uni-a", "uni-a-staging"]
    for path in (
        f"/api/communities/hackweek/costs?month={MONTH}",
        "/api/communities/hackweek/invoices",
        f"/api/communities/hackweek/costs/charts/daily-cost?month={MONTH}",
    ):
        response = _api(cf, "lead-a", path)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "no community named 'hackweek'"}  # as if there were none
    assert httpx.get(f"{cf.url}/api/costs", timeout=30).status_code == 401
    assert _api(cf, "lead-a", "/api/costs?month=2026-13").status_code == 422


def test_a_community_per_hub_user_and_group(cf: ConsoleFleet) -> None:
    view = _json(cf, "lead-a", f"/api/communities/uni-a/costs?month={MONTH}")
    hubs = {h["hub"]: h for h in view["hubs"]}
    assert set(hubs) == {"uni-a", "uni-a-staging"}
    for hub in hubs.values():
        lines = sum((_money(hub[line]) for line in ("direct", "shared", "idle")), Decimal(0))
        assert lines == _money(hub["total"]) > 0
    # the tagged row and its credit are uni-a's own, beside its use on the price sheet
    assert _money(hubs["uni-a"]["direct"]) > Decimal("10.34")
    for kind in ("users", "groups"):
        for name, hub in hubs.items():
            rows = [r for r in view[kind] if r["hub"] == name]
            assert sum((_money(r["cost"]) for r in rows), Decimal(0)) == _money(hub["total"]), (kind, name)
    users = {r["username"] for r in view["users"] if r["hub"] == "uni-a"}
    assert {"a0", "a1", "a2"} <= users
    groups = {r["group"] for r in view["groups"] if r["hub"] == "uni-a"}
    assert {"physics101", "tutors", "(no group)"} <= groups
    chart = _json(cf, "lead-a", f"/api/communities/uni-a/costs/charts/daily-cost?month={MONTH}&currency=USD")
    assert chart["columns"] == ["day", "uni-a", "uni-a-staging"] and chart["y_title"] == "USD"
    assert len(chart["rows"]) == calendar.monthrange(FIRST.year, FIRST.month)[1]  # every day of the month
    assert chart["rows"][0][0] == FIRST.isoformat()
    per_hub = [sum(Decimal(str(row[i])) for row in chart["rows"]) for i in (1, 2)]
    for figure, hub in zip(per_hub, ("uni-a", "uni-a-staging"), strict=True):
        assert abs(figure - _money(hubs[hub]["total"])) <= Decimal("0.01") * len(chart["rows"])
    csv = _api(cf, "lead-a", f"/api/communities/uni-a/costs/charts/daily-cost.csv?month={MONTH}")
    assert csv.status_code == 200 and csv.text.splitlines()[0] == "day,uni-a,uni-a-staging"


def test_budgets_with_their_forecast_and_alerts(cf: ConsoleFleet) -> None:
    rows = {c["name"]: c for c in _json(cf, "ops", f"/api/costs?month={MONTH}")["communities"]}
    hackweek = rows["hackweek"]["budget"]
    assert hackweek["monthly"] == {"amount": "25.00", "currency": "EUR"} and hackweek["basis"] == "set"
    # its USD costs in euros at the demo's rate (1 EUR = 1.08 USD): over the whole budget
    spent = _money(hackweek["spent"])
    assert spent == (_by_currency(rows["hackweek"]["cost"])["USD"] / Decimal("1.08")).quantize(
        Decimal("0.01")
    )
    assert spent > 25 and hackweek["status"] == "over 100 %" and hackweek["tone"] == "bad"
    assert [a["reached"] for a in hackweek["alerts"]] == [True, True, True]
    assert hackweek["forecast"] == hackweek["spent"] and hackweek["days_left"] == 0  # a month that is over
    uni_a = rows["uni-a"]["budget"]
    assert uni_a["monthly"] == {"amount": "400.00", "currency": "USD"}
    assert uni_a["status"] == "ok" and not any(a["reached"] for a in uni_a["alerts"])
    # the alerts it raised are `cost` incidents of the community (no hub), on its page and in the overview
    theirs = _json(cf, "lead-h", f"/api/communities/hackweek/costs?month={MONTH}")
    assert theirs["budget"] == hackweek
    rules = {i["rule"] for i in theirs["incidents"]}
    assert {"budget-50", "budget-90", "budget-100"} <= rules
    for incident in theirs["incidents"]:
        assert (incident["kind"], incident["community"], incident["open"]) == ("cost", "hackweek", True)
    assert rows["hackweek"]["open_incidents"] == len(theirs["incidents"])
    assert rows["uni-a"]["open_incidents"] == 0
    assert _json(cf, "lead-a", f"/api/communities/uni-a/costs?month={MONTH}")["incidents"] == []


def test_invoices_and_their_downloads(cf: ConsoleFleet) -> None:
    from pypdf import PdfReader

    (ours,) = _json(cf, "lead-a", "/api/communities/uni-a/invoices")["invoices"]
    (theirs,) = _json(cf, "ops", "/api/communities/hackweek/invoices")["invoices"]
    assert ours["kind"] == "invoice" and ours["month"] == MONTH and ours["total"]["currency"] == "USD"
    assert theirs["total"]["currency"] == "EUR"
    rows = {c["name"]: c for c in _json(cf, "ops", f"/api/costs?month={MONTH}")["communities"]}
    assert rows["uni-a"]["invoice"] == ours and rows["hackweek"]["invoice"] == theirs

    pdf = _api(cf, "lead-a", ours["links"]["pdf"])
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert ours["number"] in pdf.headers["content-disposition"]
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert ours["number"] in text
    document = json.loads(_api(cf, "lead-a", ours["links"]["json"]).content)
    assert document["number"] == ours["number"] and Decimal(document["total"]) == _money(ours["total"])
    csv = _api(cf, "lead-a", ours["links"]["csv"])
    assert csv.status_code == 200 and csv.text.startswith("number,")

    # another community's invoice: 404 under either community's path, for the leader; fine for operators
    for path in (
        theirs["links"]["pdf"],
        f"/api/communities/uni-a/invoices/{theirs['number']}/pdf",
        "/api/communities/uni-a/invoices/no-such-number/pdf",
        "/api/communities/uni-a/invoices/..%2F..%2Ffleet.yaml/json",
    ):
        assert _api(cf, "lead-a", path).status_code == 404, path
    assert _api(cf, "ops", theirs["links"]["pdf"]).content.startswith(b"%PDF")
    assert _api(cf, "ops", f"/api/communities/uni-a/invoices/{theirs['number']}/pdf").status_code == 404
    assert httpx.get(cf.url + ours["links"]["pdf"], timeout=30).status_code == 401


# --------------------------------------------------------------------------- pages


def test_pages_over_http(cf: ConsoleFleet) -> None:
    ops = signed_in_client(cf, "ops")
    with contextlib.closing(ops):
        page = ops.get("/costs", params={"month": MONTH})
        assert page.status_code == 200
        assert 'data-testid="account-checks"' in page.text
        billed = _money(
            next(
                c for c in _json(cf, "ops", f"/api/costs?month={MONTH}")["checks"] if c["account"] == ACCOUNT
            )["billed"]
        )
        assert f"billed {billed} USD = allocated {billed} USD" in page.text
        assert 'href="/communities/hackweek/costs?month=' in page.text
        assert 'data-budget-status="over 100 %"' in page.text
        assert 'data-testid="open-cost-incidents"' in page.text  # hackweek's budget alerts
        assert ops.get("/costs", params={"month": "last"}).status_code == 400
    lead = signed_in_client(cf, "lead-a")
    with contextlib.closing(lead):
        page = lead.get("/costs", params={"month": MONTH})
        assert page.status_code == 200 and "account-checks" not in page.text and "hackweek" not in page.text
        invoice = _json(cf, "lead-a", "/api/communities/uni-a/invoices")["invoices"][0]
        mine = lead.get("/communities/uni-a/costs", params={"month": MONTH})
        assert mine.status_code == 200
        for fmt in ("pdf", "csv", "json"):
            assert f'href="{invoice["links"][fmt]}"' in mine.text
        assert re.search(r'data-testid="hub-costs"', mine.text) and "physics101" in mine.text
        assert lead.get(invoice["links"]["pdf"]).content.startswith(b"%PDF")  # with the session cookie
        assert lead.get("/communities/hackweek/costs").status_code == 404
        community = lead.get("/communities/uni-a")
        assert (
            'data-testid="cost-box"' in community.text and 'href="/communities/uni-a/costs"' in community.text
        )
        nav = re.search(r'<a href="/costs"[^>]*>Costs</a>', community.text)
        assert nav is not None
    assert httpx.get(f"{cf.url}/costs", timeout=30).status_code in (303, 307)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_cost_pages_in_chromium(cf: ConsoleFleet) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    view = _json(cf, "ops", f"/api/costs?month={MONTH}")
    total = view["total"][0]
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            for who, path, hubs in (
                ("ops", f"/costs?month={MONTH}", 4),
                ("lead-a", f"/communities/uni-a/costs?month={MONTH}", 2),
            ):
                context = browser.new_context(base_url=cf.url, viewport={"width": 1400, "height": 900})
                context.set_default_timeout(30_000)
                page = context.new_page()
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
                page.goto(path)
                page.get_by_label("Username").fill(who)
                page.get_by_label("Password").fill(cf.passwords[who])
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url(f"{cf.url}{path}")
                nav = page.get_by_role("navigation", name="Main")
                assert nav.get_by_role("link", name="Costs").get_attribute("aria-current") == "page"
                page.wait_for_selector(".cost-chart[data-drawn]")
                chart = page.locator(".cost-chart").first
                assert chart.get_attribute("data-drawn") == "true"
                # Plotly drew one stacked bar trace per hub with a cost
                assert page.evaluate("document.querySelector('.cost-chart').data.length") == hubs
                assert page.evaluate("document.querySelector('.cost-chart').layout.barmode") == "relative"
                assert chart.locator(".main-svg").count() >= 1
                if who == "ops":
                    shown = page.get_by_test_id("costs-total").inner_text()
                    assert f"{Decimal(total['amount']):,} {total['currency']}" in shown
                    assert page.get_by_test_id("account-checks").get_by_text("does not add up").count() == 0
                else:
                    shown = page.get_by_test_id("community-total").inner_text()
                    uni_a = next(c for c in view["communities"] if c["name"] == "uni-a")["cost"][0]
                    assert f"{Decimal(uni_a['amount']):,} USD" in shown
                    # sorting the user table by cost, largest first on the second click
                    table = page.get_by_test_id("user-costs")
                    table.get_by_role("button", name="Cost").click()
                    table.get_by_role("button", name="Cost").click()
                    figures = [
                        Decimal(text.split()[0].replace(",", ""))
                        for text in table.locator("tbody td.num").all_inner_texts()
                    ]
                    assert figures == sorted(figures, reverse=True) and len(figures) >= 3
                    with page.expect_download() as download:
                        page.get_by_test_id("invoices").get_by_role("link", name=re.compile("^PDF")).click()
                    assert download.value.suggested_filename.endswith(".pdf")
                page.screenshot(path=str(SCREENSHOTS / f"{who}-costs.png"), full_page=True)
                context.close()
        finally:
            browser.close()
    assert not errors, errors

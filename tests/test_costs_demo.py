"""Issue 18 end to end on the demo fleet: people sign in through the hubs' login forms and start servers on
both communities' hubs, the daemon's collector records their sessions and groups, a FOCUS export of the
demo's claimed billing account for this month is imported, and then every hub, user and group has its cost,
each account adds up to its bill to the cent, the hackweek community (25 EUR) is over its budget with a
`cost` incident raised by the daemon, and both communities' invoices are written (the PDF read back equals
the JSON). Also: the committed sample export of 2026-11 adds up, group costs use the month's memberships,
and disk measurements are kept daily so that a past month's storage can be allocated again."""

from __future__ import annotations

import html
import io
import json
import re
import shutil
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pypdf import PdfReader
from sqlalchemy import func, select

from costs_alloc_helpers import at, put_groups, put_home, put_import, put_session, write_fleet
from fleet_helpers import (
    DEMO,
    copy_demo_fleet,
    daemon_status,
    edit,
    hubfleet,
    press_start,
    running_fleet,
    wait_for,
)
from hubfleet.config.validate import load_fleet
from hubfleet.costs import queries
from hubfleet.costs.allocation import allocate_month
from hubfleet.costs.focus_sample import ExpectedTotals, write_export
from hubfleet.monitor.disk_usage import KEEP_COLLECTIONS, KEEP_DAYS, HubDisk, record_disk
from hubfleet.store import Store, open_store
from hubfleet.store.models import HomeUsage, HubUserGroup, ServerSession

D = Decimal
CENT = D("0.01")
ACCOUNT = "111122223333"  # the demo's local cluster claims it (clusters/local.yaml)
SAMPLE = DEMO / "billing" / "focus-aws-2026-11.csv"
KEEP = {f"communities/{c}/hubs/staging.yaml" for c in ("uni-a", "hackweek")}
PEOPLE = {  # hub -> who signs in and starts a server there (dummy auth, password demo-staging)
    "uni-a-staging": ("alice", "bob"),
    "hackweek-staging": ("carol",),
}
GROUP = ("uni-a-staging", "lab-1", "bob")  # hub, group, member


# --------------------------------------------------------------------------- the running demo fleet


@dataclass
class Demo:
    root: Path
    month: str
    expected: ExpectedTotals
    imported: dict[str, Any]
    report: dict[str, Any]
    users: dict[str, Any]
    groups: dict[str, Any]
    budgets: list[dict[str, Any]]
    incidents: list[dict[str, Any]]
    invoices: list[dict[str, Any]]


def post_form(client: httpx.Client, path: str, fields: dict[str, str]) -> httpx.Response:
    """GET the page, then POST its form with `fields` and the page's _xsrf value, as a browser does."""
    page = client.get(path)
    assert page.status_code == 200, page.text[:500]
    xsrf = re.search(r'name="_xsrf"\s+value="([^"]*)"', page.text)
    assert xsrf, f"no _xsrf field in {path}"
    return client.post(path, data={**fields, "_xsrf": html.unescape(xsrf.group(1))})


def sign_in_and_start(url: str, username: str) -> None:
    """A person: the login form, then Start on the home page (keeping the preselected environment)."""
    with httpx.Client(base_url=url, timeout=30, follow_redirects=False) as browser:
        signed_in = post_form(browser, "/hub/login", {"username": username, "password": "demo-staging"})
        assert signed_in.status_code == 302, signed_in.text[:500]
        spawn_page = browser.get("/hub/spawn")  # no options form: this GET starts the server
        press_start(browser, spawn_page)


def costs_json(root: Path, *args: str) -> dict[str, Any]:
    return json.loads(hubfleet("costs", *args, "--json", fleet=root, check=True).stdout)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    root = copy_demo_fleet(tmp_path_factory.mktemp("costs") / "demo", keep=KEEP)
    # the staging hubs' people count on the uni-a invoice too (the copy has no prod hub)
    edit(
        root / "fleet.yaml",
        "      currency: USD\n      fixed_fee: 250\n",
        "      currency: USD\n      fixed_fee: 250\n      mau_stages: all\n",
    )
    month = datetime.now(UTC).strftime("%Y-%m")
    export = root.parent / f"focus-{month}.csv"
    fleet = load_fleet(root)
    expected = write_export(
        export,
        flavour="aws",
        month=month,
        account=ACCOUNT,
        hubs={name: hub.cluster for name, hub in fleet.hubs.items()},
        rows=400,
        seed=18,
        through=datetime.now(UTC).date(),  # an export of the running month ends today
    )
    env = {"HUBFLEET_COLLECT_INTERVAL": "1", "HUBFLEET_COST_INTERVAL": "2"}
    with running_fleet(root, env=env):
        urls = {hub: daemon_status(root)["hubs"][hub]["url"] for hub in PEOPLE}
        for hub, people in PEOPLE.items():
            for username in people:
                sign_in_and_start(urls[hub], username)
        hub, group, member = GROUP
        token = hubfleet("token", hub, fleet=root, check=True).stdout.strip()
        with httpx.Client(base_url=urls[hub], headers={"Authorization": f"token {token}"}, timeout=30) as ops:
            made = ops.post(f"/hub/api/groups/{group}", json={"users": [member]})
            assert made.status_code == 201, made.text

        def recorded() -> bool:
            with open_store(root / ".hubfleet") as store, store.session() as session:
                sessions = {(s.hub, s.username) for s in session.scalars(select(ServerSession))}
                groups = {(g.hub, g.group, g.username) for g in session.scalars(select(HubUserGroup))}
            wanted = {(h, u) for h, people in PEOPLE.items() for u in people}
            return wanted <= sessions and GROUP in groups

        wait_for(recorded, timeout=120, interval=1)
        imported = json.loads(
            hubfleet("costs", "import", str(export), "--json", fleet=root, check=True).stdout
        )

        def hackweek_incident() -> list[dict[str, Any]]:
            listed = json.loads(hubfleet("incidents", "--json", fleet=root, check=True).stdout)
            return [i for i in listed if i["kind"] == "cost" and i["community"] == "hackweek"]

        incidents = wait_for(hackweek_incident, timeout=90, interval=2)  # the daemon's cost watch
    # The reports once the daemon is down: it re-allocates the month every 2 s here, and a report's queries
    # are not one snapshot (a report read during a re-allocation can mix the two; see the E2E report).
    report = costs_json(root, "--month", month)
    users = costs_json(root, "--month", month, "--by", "user")
    groups = costs_json(root, "--month", month, "--by", "group")
    budgets = json.loads(hubfleet("budgets", "--month", month, "--json", fleet=root, check=True).stdout)[
        "budgets"
    ]
    invoices = json.loads(
        hubfleet("invoices", "generate", "--month", month, "--json", fleet=root, check=True).stdout
    )
    yield Demo(root, month, expected, imported, report, users, groups, budgets, incidents, invoices)


def test_the_import_adds_up_to_the_bill(demo: Demo) -> None:
    billed = demo.expected.billed.quantize(CENT)
    accounts = {a["account"]: a for a in demo.report["accounts"]}
    assert set(accounts) == {ACCOUNT, "price-sheet:local"}, accounts
    imported = accounts[ACCOUNT]
    assert (imported["source"], imported["currency"]) == ("import", "USD")
    assert D(imported["billed"]) == billed == D(imported["allocated"]) and imported["ok"], imported
    sheet = accounts["price-sheet:local"]
    assert sheet["source"] == "price-sheet" and sheet["ok"], sheet
    assert D(sheet["billed"]) == D(sheet["allocated"])  # the fixed cost so far and the servers' use
    assert demo.report["ok"]
    # every hub has its cost; hubs and what stays unallocated add up to both bills, to the cent
    hubs = {h["hub"]: h for h in demo.report["hubs"]}
    assert set(hubs) == set(PEOPLE)
    assert all(D(h["total"]) > 0 and D(h["direct"]) != 0 for h in hubs.values()), hubs
    unallocated = sum(D(line["amount"]) for line in demo.report["account_lines"])
    # only the rows tagged with a hub the fleet does not have stay unallocated (the account is claimed)
    assert (
        unallocated == sum(demo.expected.unknown_hubs.values()).quantize(CENT) == D(imported["unallocated"])
    )
    (total,) = demo.report["totals"]
    assert D(total["total"]) == billed + D(sheet["billed"])
    assert sum(D(h["total"]) for h in hubs.values()) + unallocated == D(total["total"])
    communities = {c["community"]: D(c["total"]) for c in demo.report["communities"]}
    assert communities == {
        "uni-a": D(hubs["uni-a-staging"]["total"]),
        "hackweek": D(hubs["hackweek-staging"]["total"]),
    }
    # the import's own summary: every row read, the same bill, each hub's tagged rows to the cent
    (item,) = demo.imported["accounts"]
    assert (item["rows"], D(item["billed"]), item["month"]) == (demo.expected.rows, billed, demo.month)
    assert item["billed_micros"] == int((demo.expected.billed * 1_000_000).to_integral_value())
    assert {h: D(a) for h, a in item["hubs"].items()} == {
        h: a.quantize(CENT) for h, a in demo.expected.hubs.items()
    }


def test_every_user_and_group_has_its_cost(demo: Demo) -> None:
    # each report against its own hubs: each command allocates the running month again first
    user_hubs = {h["hub"]: D(h["total"]) for h in demo.users["hubs"]}
    group_hubs = {h["hub"]: D(h["total"]) for h in demo.groups["hubs"]}
    users: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for row in demo.users["users"]:
        users[row["hub"]][row["user"]] = D(row["amount"])
    groups: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for row in demo.groups["groups"]:
        groups[row["hub"]][row["group"]] = D(row["amount"])
    for hub, people in PEOPLE.items():
        assert set(people) <= set(users[hub]), (hub, users[hub])
        assert all(users[hub][person] > 0 for person in people), users[hub]
        assert sum(users[hub].values()) == user_hubs[hub], (hub, users[hub])
        assert sum(groups[hub].values()) == group_hubs[hub], (hub, groups[hub])
    hub, group, member = GROUP
    assert groups[hub][group] > 0 and set(groups[hub]) == {group, "(no group)"}  # bob's; alice has none


def test_hackweek_is_over_its_budget_with_a_cost_incident(demo: Demo) -> None:
    (hackweek,) = [b for b in demo.budgets if b["community"] == "hackweek" and b["hub"] is None]
    assert (hackweek["budget"], hackweek["currency"]) == ("25.00", "EUR")
    assert hackweek["forecast_over"] or "100" in hackweek["reached"], hackweek
    assert D(hackweek["forecast"]) > 25
    rules = {i["rule"] for i in demo.incidents}
    assert rules & {"forecast", "budget-100"}, rules
    assert all(i["hub"] == "" and i["resolved_at"] is None for i in demo.incidents)


def test_both_communities_invoices_read_back_as_their_json(demo: Demo) -> None:
    outcomes = {o["community"]: o for o in demo.invoices}
    assert set(outcomes) == {"uni-a", "hackweek"}
    for community, outcome in outcomes.items():
        assert outcome["error"] is None and outcome["created"], outcome
        assert any("is not over yet" in warning for warning in outcome["warnings"]), outcome["warnings"]
        files = {Path(f).suffix: Path(f) for f in outcome["files"]}
        assert set(files) == {".pdf", ".csv", ".json"}
        doc = json.loads(files[".json"].read_text())
        number = outcome["invoice"]["number"]
        assert doc["number"] == number and doc["month"] == demo.month and doc["community"] == community
        text = "\n".join(
            page.extract_text() for page in PdfReader(io.BytesIO(files[".pdf"].read_bytes())).pages
        )
        flat = " ".join(text.split())
        assert number in flat
        currency = doc["currency"]
        lines = doc["lines"]
        assert sum(D(line["amount"]) for line in lines) == D(doc["total"])
        assert f"Total {D(doc['total']):,.2f} {currency}" in flat
        assert D(outcome["invoice"]["total"]) == D(doc["total"])
        passed = {line["hub"]: line for line in lines if line["kind"] == "pass_through"}
        own_hubs = {h["hub"] for h in demo.report["hubs"] if h["community"] == community}
        assert set(passed) == own_hubs, passed
        for hub, line in passed.items():
            assert f"Cloud costs, hub {hub}" in flat
            assert f"{D(line['amount']):,.2f}" in flat
            assert D(line["amount"]) > 0
        csv_rows = files[".csv"].read_text().splitlines()
        assert len(csv_rows) == len(lines) + 1 and all(number in row for row in csv_rows[1:])
        if community == "uni-a":  # standard plan: 250 fee, 10 USD per active person (alice and bob)
            (mau,) = [line for line in lines if line["kind"] == "mau"]
            assert (D(mau["quantity"]), D(mau["amount"])) == (2, D("20.00"))
            assert "Active people, tier 1-10 2 10.00 20.00" in flat
            assert "Service fee (monthly) 1 250.00 250.00" in flat
            assert doc["mau"]["people"] == 2
        else:  # the event plan: a fee, its cloud costs in EUR at 10 % markup, VAT
            assert currency == "EUR" and {line["kind"] for line in lines} >= {"fixed_fee", "markup", "tax"}
            assert "VAT 19" in flat


# --------------------------------------------------------------------------- the committed sample


def test_the_committed_demo_sample_adds_up(tmp_path: Path) -> None:
    """examples/demo-fleet/billing/focus-aws-2026-11.csv, imported into a copy of the whole demo fleet:
    every demo hub has its tagged cost, and the month adds up to the bill (README.md beside it)."""
    assert SAMPLE.stat().st_size < 200_000
    root = tmp_path / "demo"
    shutil.copytree(
        DEMO, root, ignore=shutil.ignore_patterns(".hubfleet", ".hubfleet-data", ".hubfleet-backups")
    )
    fleet = load_fleet(root)
    regenerated = tmp_path / "again.csv"
    expected = write_export(
        regenerated,
        flavour="aws",
        month="2026-11",
        account=ACCOUNT,
        hubs={name: hub.cluster for name, hub in fleet.hubs.items()},
        rows=300,
    )
    renamed = (  # the README's sed: hubfleet's own tag keys instead of the generator's AWS ones
        regenerated.read_text()
        .replace("user:2i2c:hub-name", "user:hubfleet-hub")
        .replace("user:2i2c.org/cluster-name", "user:hubfleet-cluster")
    )
    assert renamed == SAMPLE.read_text(), "the README's commands no longer make the sample"
    assert "user:hubfleet-hub" in renamed and "2i2c" not in renamed
    hubfleet("costs", "import", str(SAMPLE), fleet=root, check=True)
    report = costs_json(root, "--month", "2026-11")
    accounts = {a["account"]: a for a in report["accounts"]}
    assert accounts[ACCOUNT]["ok"] and report["ok"]
    assert D(accounts[ACCOUNT]["billed"]) == expected.billed.quantize(CENT) == D("641.15")
    hubs = {h["hub"]: h for h in report["hubs"]}
    assert set(hubs) == set(fleet.hubs) == set(expected.hubs)
    for hub, amount in expected.hubs.items():
        assert D(hubs[hub]["direct"]) == amount.quantize(CENT), hub
    unallocated = sum(D(line["amount"]) for line in report["account_lines"])
    assert unallocated == sum(expected.unknown_hubs.values()).quantize(CENT)  # the retired hub's rows
    billed = sum(D(a["billed"]) for a in report["accounts"])
    assert sum(D(h["total"]) for h in hubs.values()) + unallocated == billed
    (total,) = report["totals"]
    assert D(total["total"]) == billed


# --------------------------------------------------------------------------- gaps fixed (store level)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "state") as opened:
        yield opened


def test_group_costs_use_that_months_memberships(tmp_path: Path, store: Store) -> None:
    month = "2026-10"
    fleet = write_fleet(tmp_path / "fleet")
    put_session(store, "h1", "ann", at(month, 3, 8), 10)
    put_session(store, "h1", "bob", at(month, 3, 8), 10)
    # ann left g-old in September and joined g-new in November; bob was in g-oct during October only
    put_groups(store, "h1", {"ann": ["g-old"]}, first_seen=at("2026-08", 1), last_seen=at("2026-09", 30, 12))
    put_groups(store, "h1", {"ann": ["g-new"]}, first_seen=at("2026-11", 2))
    put_groups(store, "h1", {"bob": ["g-oct"]}, first_seen=at(month, 1, 1), last_seen=at(month, 31, 23))
    put_import(store, "acct-1", month, [(3, "a", "h1", "Usage", "Compute Engine", 20_000_000)])
    allocate_month(store, fleet, month)
    groups = {g: by["USD"] for g, by in queries.group_month_costs(store, month, "h1").items()}
    assert groups == {"(no group)": D("10.00"), "g-oct": D("10.00")}


def test_disk_measurements_are_kept_daily_and_a_past_months_storage_allocates_again(
    tmp_path: Path, store: Store
) -> None:
    """Four collections a day for 40 days: the newest KEEP_COLLECTIONS and each day's last stay; a month
    allocated again afterwards averages the days' last measurements."""
    fleet = write_fleet(tmp_path / "fleet", p_sheet={"storage_gib_month": "1.00"})
    gib = 1024**3
    first = at("2026-10", 1)
    days = 40
    for day in range(days):
        for hour in (0, 6, 12, 18):
            when = first + timedelta(days=day, hours=hour)
            # dee: 10 GiB all October except 40 GiB at 18:00 (each day's last); the hub adds 1 GiB
            size = 40 * gib if hour == 18 else 10 * gib
            record_disk(store, HubDisk(hub="h5", at=when, users={"dee": size}, data_bytes=gib))
    with store.session() as session:
        times = session.scalars(
            select(HomeUsage.at).where(HomeUsage.hub == "h5", HomeUsage.username == "").order_by(HomeUsage.at)
        ).all()
        rows = session.scalar(select(func.count()).select_from(HomeUsage))
    # each day's last (18:00), and the newest three of the last day (06:00, 12:00, 18:00)
    assert len(times) == days + KEEP_COLLECTIONS - 1
    assert rows == 2 * len(times)
    assert [t for t in times if t.hour == 18] == [first + timedelta(days=d, hours=18) for d in range(days)]
    allocate_month(store, fleet, "2026-10")
    by_user = {u: sum(by.values()) for u, by in queries.user_month_costs(store, "2026-10", "h5").items()}
    assert by_user == {"dee": D("40.00"), "": D("1.00")}  # the October average of the days' last: 40 GiB
    # a measurement older than KEEP_DAYS goes at the next collection
    old = first - timedelta(days=KEEP_DAYS + 5)
    record_disk(store, HubDisk(hub="h5", at=old, users={}, data_bytes=gib))
    with store.session() as session:
        assert session.scalar(select(func.min(HomeUsage.at)).where(HomeUsage.hub == "h5")) == times[0]


def test_a_home_made_late_in_the_month_pays_for_its_part_of_it(tmp_path: Path, store: Store) -> None:
    """Storage GiB-months average each measured day's last measurement; a user without a home on a measured
    day counts 0 for it (before: the average over the user's own measurements, a whole month's price)."""
    fleet = write_fleet(tmp_path / "fleet", p_sheet={"storage_gib_month": "1.00"})
    for day in range(1, 11):  # October 1-10 measured; eve's home exists from the 6th
        put_home(store, "h5", "dee", at("2026-10", day, 3), 100)  # earlier that day: not the day's last
        put_home(store, "h5", "dee", at("2026-10", day, 20), 10)
        if day >= 6:
            put_home(store, "h5", "eve", at("2026-10", day, 20), 10)
        put_home(store, "h5", "", at("2026-10", day, 20), 10 + (10 if day >= 6 else 0) + 1)
    allocate_month(store, fleet, "2026-10")
    by_user = {u: sum(by.values()) for u, by in queries.user_month_costs(store, "2026-10", "h5").items()}
    assert by_user == {"dee": D("10.00"), "eve": D("5.00"), "": D("1.00")}

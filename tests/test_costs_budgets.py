"""Budgets and cost surprises on real store rows: the budget (set, or the default rule from past months),
spent and forecast from the month's allocation, threshold and forecast incidents raised once per month and
delivered to a real SMTP server and webhook, resolved when the month ends; a jump in a hub's daily cost; the
config rules on plans, budgets' hubs, claimed billing accounts and currencies without a rate."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import insert

from alert_receivers import smtp_server, webhook_receiver
from fleet_helpers import copy_demo_fleet, drop_section, hubfleet
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.validate import load_fleet, validate_fleet
from hubfleet.costs.budgets import budget_statuses, forecast, months_before, threshold_rule
from hubfleet.costs.cost_anomaly import cost_anomalies
from hubfleet.daemon.cost_watch import CostWatch
from hubfleet.daemon.incident_alerts import IncidentAlerts
from hubfleet.monitor.alerts import Alerter
from hubfleet.monitor.incidents import IncidentRecord, list_incidents, resolve_incident
from hubfleet.store.api import Store, open_store
from hubfleet.store.cost_allocations import CostAllocationDay, CostAllocationLine

OPS = "ops@hubfleet.example"
PAT = "pat@uni-a.example"
GRACE = "grace@uni-a.example"
D = Decimal


def at(day: int, hour: int = 12, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def make_fleet(tmp_path: Path, *, alerts: str = "", budget: str | None = None, drop_budget: str = "") -> Path:
    """The demo fleet (its hubs are not started) without the local cluster's price sheet (these tests write
    the month's allocation themselves), with `alerts` as fleet.yaml `monitoring.alerts` and Pat, a uni-a
    contact who takes alerts. `budget` replaces uni-a's budget line; `drop_budget` names a community whose
    budget goes."""
    root = copy_demo_fleet(tmp_path / "fleet")
    cluster = root / "clusters/local.yaml"
    cluster.write_text(drop_section(cluster.read_text(), "costs"))
    if alerts:
        with (root / "fleet.yaml").open("a") as f:
            f.write("monitoring:\n  alerts:\n" + alerts)
    community = root / "communities/uni-a/community.yaml"
    pat = "  - name: Pat Leader\n    email: pat@uni-a.example\n    alerts: true\n"
    text = community.read_text().replace("    reports: true\n", "    reports: true\n" + pat)
    if budget is not None:
        text = text.replace("  budget: {monthly: 400}\n", f"  budget: {budget}\n")
    community.write_text(text)
    if drop_budget:
        path = root / f"communities/{drop_budget}/community.yaml"
        path.write_text(re.sub(r"(?m)^  budget: .*\n", "", path.read_text()))
    return root


def email_alerts(port: int) -> str:
    return (
        "    community_contacts: true\n    email:\n      - name: ops-mail\n        smtp_host: 127.0.0.1\n"
        f"        smtp_port: {port}\n        security: none\n        sender: hubfleet@hubfleet.example\n"
        f"        to: [{OPS}]\n"
    )


def put_costs(store: Store, rows: list[tuple[str, date, str, str]]) -> None:
    """Allocated costs as hubfleet.costs.allocation stores them: (hub, day, amount, currency) as one
    `direct` line per hub and month, and one row per day."""
    lines: dict[tuple[str, str, str], int] = defaultdict(int)
    days = []
    for hub, day, amount, currency in rows:
        month = f"{day:%Y-%m}"
        micros = int(D(amount) * 1_000_000)
        lines[(month, hub, currency)] += micros
        days.append(
            {
                "month": month,
                "account": "test",
                "currency": currency,
                "hub": hub,
                "line": "direct",
                "day": day,
                "amount_micros": micros,
            }  # fmt: skip
        )
    with store.session() as session, session.begin():
        session.execute(insert(CostAllocationDay), days)
        session.execute(
            insert(CostAllocationLine),
            [
                {
                    "month": m,
                    "account": "test",
                    "currency": c,
                    "cluster": "local",
                    "hub": h,
                    "line": "direct",
                    "amount_micros": v,
                    "amount_cents": v // 10_000,
                }  # fmt: skip
                for (m, h, c), v in lines.items()
            ],
        )


def daily(
    hub: str, first: date, count: int, amount: str, currency: str = "USD"
) -> list[tuple[str, date, str, str]]:
    return [(hub, first + timedelta(days=k), amount, currency) for k in range(count)]


def deliver(fleet: FleetConfig, store: Store, changes: list[tuple[str, IncidentRecord]]) -> None:
    async def go() -> None:
        alerts = IncidentAlerts(Alerter(fleet, store, backoff_base=0.01), logging.getLogger("test"), "cost")
        alerts.send_all(changes)
        await alerts.drain(timeout=30)

    asyncio.run(go())


def keys(changes: list[tuple[str, IncidentRecord]]) -> list[tuple[str, str, str | None, str | None]]:
    return [(event, i.hub, i.community, i.rule) for event, i in changes]


# --------------------------------------------------------------------------- the arithmetic


def test_forecast_is_spent_plus_run_rate_times_days_left() -> None:
    # a one-off on the 1st, then 10 a day; the bill lags: nothing for the 10th to the 12th yet
    days = {date(2026, 11, 1): D(100)} | {date(2026, 11, d): D(10) for d in range(2, 10)}
    f = forecast(D(180), days, "2026-11", date(2026, 11, 12))
    assert (f.run_rate, f.rate_days, f.through, f.days_left, f.amount) == (
        D(10), 7, date(2026, 11, 9), 21, D(390)
    )  # fmt: skip
    # fewer than 7 days with cost: the mean of those there are
    f = forecast(D(12), {date(2026, 11, 1): D(4), date(2026, 11, 2): D(8)}, "2026-11", date(2026, 11, 3))
    assert (f.run_rate, f.rate_days, f.days_left, f.amount) == (D(6), 2, 28, D(180))
    # a month that is over forecasts what it spent; one with no cost yet forecasts nothing
    assert forecast(D(50), {date(2026, 11, 30): D(50)}, "2026-11", date(2026, 12, 5)).amount == D(50)
    f = forecast(D(0), {}, "2026-11", date(2026, 11, 1))
    assert (f.amount, f.days_left, f.through) == (D(0), 30, None)
    assert months_before("2026-01", 3) == ["2025-12", "2025-11", "2025-10"]
    assert [threshold_rule(D(x)) for x in ("0.5", "0.9", "1", "0.125")] == [
        "budget-50", "budget-90", "budget-100", "budget-12.5"
    ]  # fmt: skip


def test_budget_spent_and_forecast_from_store_rows(tmp_path: Path) -> None:
    fleet = load_fleet(make_fleet(tmp_path))
    with open_store(tmp_path / "state") as store:
        put_costs(
            store,
            daily("uni-a", date(2026, 11, 1), 10, "20")
            + daily("uni-a-staging", date(2026, 11, 1), 10, "10")
            # hackweek budgets in EUR (1 EUR = 1.08 USD): 2.16 USD is 2 EUR; there is no rate for GBP
            + daily("hackweek", date(2026, 11, 9), 2, "2.16")
            + [("hackweek-staging", date(2026, 11, 10), "1", "GBP")],
        )
        found = {s.community: s for s in budget_statuses(store, fleet, "2026-11", today=date(2026, 11, 11))}

    uni = found["uni-a"].to_dict()
    assert uni["budget"] == "400.00" and uni["currency"] == "USD" and uni["basis"] == "set"
    assert (uni["spent"], uni["run_rate"], uni["through"], uni["days_left"]) == (
        "300.00",
        "30.00",
        "2026-11-10",
        20,
    )
    assert uni["forecast"] == "900.00" and uni["used_percent"] == 75.0
    assert uni["reached"] == ["50"] and uni["forecast_over"] is True
    assert uni["status"] == "over 50 %, forecast over"
    assert set(found["uni-a"].rules()) == {"budget-50", "forecast"}

    hack = found["hackweek"].to_dict()
    assert hack["currency"] == "EUR" and hack["budget"] == "25.00"
    assert hack["spent"] == "4.00" and hack["run_rate"] == "2.00" and hack["forecast"] == "44.00"
    assert hack["missing_rates"] == ["GBP->EUR for 2026-11"]
    assert hack["status"] == "forecast over (rate missing)"


def test_default_budget_is_the_average_of_three_months_plus_20_percent(tmp_path: Path) -> None:
    fleet = load_fleet(make_fleet(tmp_path, drop_budget="hackweek"))
    with open_store(tmp_path / "state") as store:
        put_costs(
            store,
            [("hackweek", date(2026, 8, 3), "1000", "EUR")]  # a fourth month back: not counted
            + [
                ("hackweek", date(2026, 9, 3), "100", "EUR"),
                ("hackweek-staging", date(2026, 10, 3), "150", "EUR"),
            ]
            + [("hackweek", date(2026, 10, 4), "50", "EUR"), ("hackweek", date(2026, 11, 3), "300", "EUR")]
            + [("hackweek", date(2026, 12, 1), "120", "EUR")],
        )
        december = {s.community: s for s in budget_statuses(store, fleet, "2026-12", today=date(2026, 12, 2))}
        # no cost in the three months before August: no default budget for it
        august = {s.community: s for s in budget_statuses(store, fleet, "2026-08", today=date(2026, 8, 30))}

    hack = december["hackweek"]
    assert hack.basis == "default" and hack.currency == "EUR"  # the plan `event` is in euros
    assert hack.budget == D(240)  # (100 + 200 + 300) / 3 + 20 %
    assert hack.basis_note == "default: average of 2026-09..2026-11 + 20 %"
    assert hack.to_dict()["used_percent"] == 50.0 and hack.status == "over 50 %, forecast over"
    assert "default budget of 240.00 EUR" in hack.rules()["budget-50"]
    assert august["hackweek"].basis == "none" and august["hackweek"].budget is None
    assert august["hackweek"].status == "no budget" and august["hackweek"].rules() == {}


# --------------------------------------------------------------------------- incidents and alerts


def test_thresholds_alert_once_each_by_email_and_resolve_when_the_month_ends(tmp_path: Path) -> None:
    with smtp_server() as smtp:
        root = make_fleet(tmp_path, alerts=email_alerts(smtp.port))
        fleet = load_fleet(root)
        with open_store(tmp_path / "state") as store:
            watch = CostWatch(fleet, None, store)
            # 200 of 400 USD by the 28th, 1 a day lately: 50 % reached, the forecast (202) is not over
            put_costs(
                store,
                [("uni-a", date(2026, 11, 1), "173", "USD")] + daily("uni-a", date(2026, 11, 2), 27, "1"),
            )
            first = watch.check(at(29, 1))
            assert keys(first) == [("opened", "", "uni-a", "budget-50")]
            deliver(fleet, store, first)
            assert watch.check(at(29, 2)) == []  # still 50 %: nothing new

            put_costs(store, [("uni-a-staging", date(2026, 11, 29), "165", "USD")])  # 365: 91 %
            second = watch.check(at(29, 3))
            assert keys(second) == [("opened", "", "uni-a", "budget-90")]
            deliver(fleet, store, second)

            # an operator resolves budget-50 by hand: it was raised this month, it does not come back
            assert resolve_incident(store, "", "cost", "budget-50", at=at(29, 4), community="uni-a")
            assert watch.check(at(29, 5)) == []

            # the first look in December resolves November's open budget incident; the month starts fresh
            december = watch.check(at(1, 1, month=12))
            assert keys(december) == [("resolved", "", "uni-a", "budget-90")]
            deliver(fleet, store, december)
            listed = [i.to_dict() for i in list_incidents(store, kind="cost")]

    assert {(i["rule"], i["hub"], i["community"], i["resolved_at"] is None) for i in listed} == {
        ("budget-50", "", "uni-a", False), ("budget-90", "", "uni-a", False)
    }  # fmt: skip
    subjects = [m.subject for m in smtp.to(OPS)]
    assert subjects == [
        "[demo] OPEN: community uni-a cost alert (budget-50): community uni-a has spent 200.00 USD of its "
        "budget of 400.00 USD for 2026-11 (50 %; alert at 50 %)",
        "[demo] OPEN: community uni-a cost alert (budget-90): community uni-a has spent 365.00 USD of its "
        "budget of 400.00 USD for 2026-11 (91 %; alert at 90 %)",
        "[demo] RESOLVED: community uni-a cost alert (budget-90) (after 1d 22h)",
    ]
    assert [m.subject for m in smtp.to(PAT)] == subjects  # the community's contact who takes alerts
    assert smtp.to(GRACE) == []  # reports only
    body = smtp.to(OPS)[0].body
    assert "Hub: -" in body and "Community: uni-a" in body and "Kind: cost / budget-50" in body


def test_forecast_over_the_budget_alerts_by_webhook(tmp_path: Path) -> None:
    with webhook_receiver() as hook:
        root = make_fleet(
            tmp_path, alerts=f"    webhooks:\n      - name: ops-chat\n        url: {hook.url}\n"
        )
        fleet = load_fleet(root)
        with open_store(tmp_path / "state") as store:
            put_costs(store, daily("uni-a", date(2026, 11, 1), 10, "15"))  # 150 of 400; 15 a day x 20 days
            changes = CostWatch(fleet, None, store).check(at(11))
            deliver(fleet, store, changes)
    assert keys(changes) == [("opened", "", "uni-a", "forecast")]
    (text,) = hook.texts
    assert text.startswith("[demo] OPEN: community uni-a cost alert (forecast): community uni-a is forecast")
    assert (
        "\nCause: community uni-a is forecast to spend 450.00 USD in 2026-11, over its budget of 400.00 USD: "
        "150.00 USD spent through 2026-11-10, 15.00 USD a day (mean of the last 7 days with cost) x 20 days "
        "left\n"
    ) in text


def test_a_hubs_own_budget_raises_hub_incidents_of_its_community(tmp_path: Path) -> None:
    fleet = load_fleet(make_fleet(tmp_path, budget="{monthly: 400, hubs: {uni-a: 50}}"))
    with open_store(tmp_path / "state") as store:
        put_costs(store, daily("uni-a", date(2026, 11, 1), 3, "20"))  # 60 of the hub's 50
        changes = CostWatch(fleet, None, store).check(at(4))
        statuses = budget_statuses(store, fleet, "2026-11", communities=["uni-a"], today=date(2026, 11, 4))
    assert sorted(keys(changes)) == [
        ("opened", "", "uni-a", "forecast"),
        ("opened", "uni-a", "uni-a", "hub-budget-100"),
        ("opened", "uni-a", "uni-a", "hub-budget-50"),
        ("opened", "uni-a", "uni-a", "hub-budget-90"),
        ("opened", "uni-a", "uni-a", "hub-budget-forecast"),
    ]
    hub = statuses[1].to_dict()
    assert (hub["hub"], hub["budget"], hub["spent"], hub["status"]) == (
        "uni-a",
        "50.00",
        "60.00",
        "over 100 %",
    )


def test_a_jump_in_a_hubs_daily_cost_is_an_anomaly_until_an_ordinary_day(tmp_path: Path) -> None:
    fleet = load_fleet(make_fleet(tmp_path))
    with open_store(tmp_path / "state") as store:
        put_costs(
            store,
            daily("uni-a-staging", date(2026, 11, 1), 14, "2")
            + [("uni-a-staging", date(2026, 11, 15), "12", "USD")]
            # six times its usual too, but only 2.50 above it: below `anomaly_min_amount` (5)
            + daily("hackweek-staging", date(2026, 11, 1), 14, "0.5")
            + [("hackweek-staging", date(2026, 11, 15), "3", "USD")]
            # a new hub: no baseline yet
            + [("uni-a", date(2026, 11, 15), "40", "USD")],
        )
        verdicts = cost_anomalies(store, fleet, today=date(2026, 11, 16))
        watch = CostWatch(fleet, None, store)
        opened = [c for c in watch.check(at(16)) if c[1].rule == "anomaly"]
        put_costs(store, [("uni-a-staging", date(2026, 11, 16), "2.5", "USD")])
        resolved = [c for c in watch.check(at(17)) if c[1].rule == "anomaly"]

    assert verdicts["uni-a-staging"].median == D(2) and verdicts["uni-a-staging"].day == date(2026, 11, 15)
    assert verdicts["hackweek-staging"].cause == "" and verdicts["uni-a"].cause is None
    assert verdicts["uni-a-staging"].cause == (
        "hub uni-a-staging cost 12.00 USD on 2026-11-15, 3x above usual: its median of the 14 days before is "
        "2.00 USD (alert above 3x and more than 5.00 USD above it)"
    )
    assert keys(opened) == [("opened", "uni-a-staging", "uni-a", "anomaly")]
    assert keys(resolved) == [("resolved", "uni-a-staging", "uni-a", "anomaly")]


def test_hubfleet_budgets_and_incidents_show_each_community(tmp_path: Path) -> None:
    root = make_fleet(tmp_path, budget="{monthly: 400, hubs: {uni-a-staging: 100}}")
    with open_store(root / ".hubfleet") as store:
        put_costs(
            store,
            daily("uni-a", date(2026, 10, 1), 31, "10")
            + daily("uni-a-staging", date(2026, 10, 1), 10, "11")
            + daily("uni-a", date(2026, 11, 1), 3, "100"),  # 300 of 400 by the 3rd; 10 times October's
        )
        CostWatch(load_fleet(root), None, store).check(at(4))
    listed = json.loads(hubfleet("incidents", "--json", fleet=root, check=True).stdout)
    assert {(i["kind"], i["hub"], i["community"], i["rule"]) for i in listed} == {
        ("cost", "", "uni-a", "budget-50"),
        ("cost", "", "uni-a", "forecast"),
        ("cost", "uni-a", "uni-a", "anomaly"),
    }
    result = hubfleet("budgets", "--month", "2026-10", "--json", fleet=root, check=True)
    shown = {(b["community"], b["hub"]): b for b in json.loads(result.stdout)["budgets"]}
    assert shown[("uni-a", None)]["spent"] == "420.00" and shown[("uni-a", None)]["status"] == "over 100 %"
    assert shown[("uni-a", "uni-a-staging")]["status"] == "over 100 %"
    assert shown[("hackweek", None)]["spent"] == "0.00" and shown[("hackweek", None)]["status"] == "ok"
    table = hubfleet("budgets", "--month", "2026-10", "--community", "uni-a", fleet=root, check=True).stdout
    assert "420.00 USD" in table and "over 100 %" in table and "hackweek" not in table
    bad = hubfleet("budgets", "--community", "uni", fleet=root)
    assert bad.returncode == 1 and "no such community; did you mean 'uni-a'?" in bad.stderr


# --------------------------------------------------------------------------- config rules


def _line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_rules_plans_budget_hubs_and_claimed_accounts(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet")
    community = root / "communities/uni-a/community.yaml"
    community.write_text(
        community.read_text()
        .replace("  plan: standard\n", "  plan: standart\n")
        .replace(
            "  budget: {monthly: 400}\n", "  budget:\n    monthly: 400\n    hubs: {hackweek: 5, uni-b: 1}\n"
        )
    )
    (root / "clusters/other.yaml").write_text(
        "name: other\nkind: local\ncosts:\n  billing_accounts:\n    - '999'\n    - '111122223333'\n"
    )
    _, errors = validate_fleet(root)
    shown = [str(e) for e in errors]
    plan_line = _line_of(community, "plan: standart")
    assert (
        f"communities/uni-a/community.yaml:{plan_line}:3: billing.plan: no plan 'standart' in fleet.yaml "
        "`costs.plans`; did you mean 'standard'?"
    ) in shown
    hubs_line = _line_of(community, "hubs: {hackweek")
    assert any(
        s.startswith(f"communities/uni-a/community.yaml:{hubs_line}:")
        and "'hackweek' is not a hub of community uni-a; hub hackweek belongs to community hackweek" in s
        for s in shown
    ), shown
    assert any("'uni-b' is not a hub of community uni-a; did you mean 'uni-a'?" in s for s in shown), shown
    assert (
        "clusters/other.yaml:6:7: costs.billing_accounts: billing account '111122223333' is already claimed "
        "by cluster local (clusters/local.yaml); a billing row can belong to one cluster only: remove it "
        "from one of them"
    ) in shown, shown


def test_a_budget_in_a_currency_without_a_rate_is_a_warning(tmp_path: Path) -> None:
    root = copy_demo_fleet(tmp_path / "fleet")
    community = root / "communities/uni-a/community.yaml"
    community.write_text(
        community.read_text().replace(
            "  budget: {monthly: 400}\n", "  budget: {monthly: 400, currency: GBP}\n"
        )
    )
    result = hubfleet("validate", fleet=root)
    assert result.returncode == 0, result.stdout + result.stderr
    line = _line_of(community, "currency: GBP")
    column = next(t for t in community.read_text().splitlines() if "currency: GBP" in t).index("currency") + 1
    assert (
        f"communities/uni-a/community.yaml:{line}:{column}: warning: the budget is in GBP, the fleet's "
        "currency is USD, and there is no GBP->USD exchange rate: add one to fleet.yaml "
        "`costs.exchange_rates` (- {source: GBP, target: USD, rate: ...})"
    ) in result.stderr
    # the demo's euro plan and budget have a rate: no warning
    assert "EUR" not in result.stderr


def test_the_console_lists_a_communitys_cost_incidents_with_its_hubs(tmp_path: Path) -> None:
    from hubfleet.console.data.details import community_detail, hub_detail, incidents
    from hubfleet.console.data.source import ConsoleSource

    fleet = load_fleet(make_fleet(tmp_path))
    with open_store(tmp_path / "state") as store:
        put_costs(store, daily("uni-a", date(2026, 11, 1), 3, "100"))  # 300 of 400 by the 3rd
        CostWatch(fleet, None, store).check(at(4))
        source = ConsoleSource(store, fleet, None)
        now = at(5)
        fleet_wide = incidents(source, sorted(fleet.hubs), kind="cost", now=now)
        of_hackweek = incidents(source, ["hackweek", "hackweek-staging"], now=now)
        uni_page = community_detail(source, "uni-a", now)["incidents"]
        hub_page = hub_detail(source, "uni-a", now)["incidents"]
    assert {(i["hub"], i["community"], i["rule"]) for i in fleet_wide} == {
        ("", "uni-a", "budget-50"),
        ("", "uni-a", "forecast"),
    }
    assert of_hackweek == [] and hub_page == []  # another community's; a hub page shows the hub's own
    assert {i["rule"] for i in uni_page} == {"budget-50", "forecast"}

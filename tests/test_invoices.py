"""Invoices: the plan maths to the cent, gap-free numbering (two processes at once, a failure mid-way),
re-generation that changes nothing, credit notes, the files equal to the stored document, the CLI."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import multiprocessing
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models_costs import Credit, MauTier, PricePlan, Tax
from hubfleet.config.validate import load_fleet
from hubfleet.costs.allocation import allocate_month
from hubfleet.costs.invoices import (
    credit_note,
    csv_text,
    generate_month,
    parse_amount,
)
from hubfleet.costs.money import cents
from hubfleet.costs.plans import fixed_fee_due, mau_fee, price_month, tier_use
from hubfleet.costs.queries import hub_month_costs
from hubfleet.monitor.usage import people_in_month
from hubfleet.settings import UserError
from hubfleet.store import open_store
from hubfleet.store.api import Store
from hubfleet.store.costs import CostImport, CostLine
from hubfleet.store.invoices import get_invoice, issue, list_invoices, numbers, outstanding
from hubfleet.store.models import ServerSession, UserDay

D = Decimal
MODELLED = [
    MauTier(up_to=10, unit_price=D(10)),
    MauTier(up_to=100, unit_price=D(5)),
    MauTier(up_to=1000, unit_price=D("2.50")),
    MauTier(up_to=10000, unit_price=D("1.25")),
    MauTier(unit_price=D(0)),
]


# --------------------------------------------------------------------------- plan maths


@pytest.mark.parametrize(
    ("people", "fee"),
    [
        (0, "0"),
        (1, "10"),
        (10, "100"),
        (11, "105"),
        (100, "550"),
        (101, "552.50"),
        (250, "925.00"),  # the issue's example: 10x10 + 90x5 + 150x2.50
        (1000, "2800"),
        (1001, "2801.25"),
        (10000, "14050"),
        (10001, "14050"),
        (50000, "14050"),
    ],
)
def test_mau_tiers_at_their_boundaries(people: int, fee: str) -> None:
    assert mau_fee(MODELLED, people) == D(fee)
    used = tier_use(MODELLED, people)
    assert sum(u.people for u in used) == people


def test_tier_breakdown_of_250_people() -> None:
    used = [(u.first, u.last, u.people) for u in tier_use(MODELLED, 250)]
    assert used == [(1, 10, 10), (11, 100, 90), (101, 1000, 150), (1001, 10000, 0), (10001, None, 0)]
    priced = price_month(PricePlan(mau_tiers=MODELLED), "2026-11", people=250, pass_through={})
    assert [(line.quantity, line.unit_price, line.amount) for line in priced.lines] == [
        (D(10), D(10), D(100)),
        (D(90), D(5), D(450)),
        (D(150), D("2.50"), D("375.00")),
    ]
    assert priced.total == D("925.00")


@pytest.mark.parametrize(
    ("period", "charged"),
    [
        ("month", set(range(1, 13))),
        ("quarter", {1, 4, 7, 10}),
        ("year", {1}),
    ],
)
def test_fixed_fee_on_the_first_month_of_its_period(period: str, charged: set[int]) -> None:
    plan = PricePlan(fixed_fee=D(600), period=period)  # type: ignore[arg-type]
    due = {m for m in range(1, 13) if fixed_fee_due(plan, f"2026-{m:02d}")}
    assert due == charged
    april = price_month(plan, "2026-04", people=0, pass_through={})
    may = price_month(plan, "2026-05", people=0, pass_through={})
    assert april.total == (D(600) if 4 in charged else D(0))
    assert may.total == (D(600) if 5 in charged else D(0))


def test_markup_discount_credit_and_tax_each_rounded_then_summed() -> None:
    plan = PricePlan(
        fixed_fee=D("100"),
        mau_tiers=[MauTier(up_to=10, unit_price=D("3.333")), MauTier(unit_price=D(1))],
        markup_percent=D("12.5"),
        discount_percent=D("15"),
        credits=[Credit(month="2026-11", amount=D("20"), reason="goodwill"),
                 Credit(month="2026-12", amount=D("999"), reason="not this month")],
        tax=Tax(name="VAT", percent=D("19")),
    )  # fmt: skip
    priced = price_month(
        plan, "2026-11", people=12, pass_through={"b-hub": D("10.005"), "a-hub": D("33.3349")}
    )
    by_kind = [(line.kind, line.hub, line.amount) for line in priced.lines]
    # tier 1: 10 x 3.333 = 33.33 (33.330); tier 2: 2 x 1 = 2
    # pass-through per hub rounded half-even: 33.3349 -> 33.33, 10.005 -> 10.00 (even)
    # markup 12.5 % of 43.33 = 5.41625 -> 5.42; discount 15 % of 135.33 = 20.2995 -> 20.30
    # subtotal 135.33 + 43.33 + 5.42 - 20.30 - 20 = 143.78; VAT 19 % = 27.3182 -> 27.32
    assert by_kind == [
        ("fixed_fee", "", D("100.00")),
        ("mau", "", D("33.33")),
        ("mau", "", D("2")),
        ("pass_through", "a-hub", D("33.33")),
        ("pass_through", "b-hub", D("10.00")),
        ("markup", "", D("5.42")),
        ("discount", "", D("-20.30")),
        ("credit", "", D("-20")),
        ("tax", "", D("27.32")),
    ]
    assert priced.subtotal == D("143.78")
    assert priced.tax == D("27.32")
    assert priced.total == D("171.10")
    assert priced.total == sum(line.amount for line in priced.lines)


def test_a_credit_larger_than_what_is_due_stops_at_zero_and_says_so() -> None:
    plan = PricePlan(fixed_fee=D(50), credits=[Credit(month="2026-11", amount=D(80), reason="prepaid")])
    priced = price_month(plan, "2026-11", people=0, pass_through={})
    assert priced.total == D(0)
    assert [line.amount for line in priced.lines] == [D("50.00"), D("-50.00")]
    assert "30.00 USD of 80.00 USD left unused" in priced.notes[0]


# --------------------------------------------------------------------------- from the store


DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo-fleet"
MONTH = "2026-11"
ISSUED = date(2026, 12, 2)
GIB = 1024**3


@pytest.fixture(scope="module")
def fleet() -> FleetConfig:
    return load_fleet(DEMO)


def add_usage(store: Store, hub: str, users: Sequence[str], *, day: int = 3, hours: float = 5) -> None:
    """Each user active on `day` of the month with one server of 1 core and 2 GiB for `hours`."""
    start = datetime(2026, 11, day, 9, tzinfo=UTC)
    with store.session() as session, session.begin():
        for name in users:
            session.add(UserDay(hub=hub, username=name, day=start.date(), identity=f"native:{name}",
                                first_seen=start, last_seen=start))  # fmt: skip
            session.add(ServerSession(hub=hub, username=name, server_name="", started_at=start,
                                      stopped_at=start + timedelta(hours=hours), last_activity=start,
                                      cpu_request=1.0, memory_request_bytes=2 * GIB))  # fmt: skip


def add_cloud_bill(store: Store) -> None:
    """The demo's claimed billing account (its backup bucket and DNS) as `hubfleet costs import` stores it:
    a row tagged with the hackweek hub and a shared row of the local cluster."""
    at = datetime(2026, 12, 1, tzinfo=UTC)
    direct, shared = 12_345_678, 30_000_000
    with store.session() as session, session.begin():
        bill = CostImport(account="111122223333", month=MONTH, currency="USD", rows=2,
                          billed_micros=direct + shared, effective_micros=None, files=[], raw_path="",
                          imported_at=at, actor="test")  # fmt: skip
        session.add(bill)
        session.flush()
        for hub, micros, service in (("hackweek", direct, "Storage"), (None, shared, "DNS")):
            session.add(CostLine(import_id=bill.id, account="111122223333", sub_account="", month=MONTH,
                                 day=date(2026, 11, 10), cluster="local", hub=hub, category="Usage",
                                 service=service, currency="USD", billed_micros=micros,
                                 effective_micros=None, list_micros=None, rows=1))  # fmt: skip


def allocate(store: Store, fleet: FleetConfig) -> None:
    allocate_month(store, fleet, MONTH, now=datetime(2026, 12, 1, tzinfo=UTC))


@pytest.fixture
def store(tmp_path: Path, fleet: FleetConfig) -> Any:
    with open_store(tmp_path / "state") as opened:
        add_usage(opened, "uni-a", [f"student{i:03d}" for i in range(120)])
        add_usage(opened, "uni-a-staging", ["grace", "student000", "tester"])
        add_usage(opened, "hackweek", [f"hacker{i}" for i in range(7)], day=20, hours=30)
        add_cloud_bill(opened)
        allocate(opened, fleet)
        yield opened


def generate(store: Store, fleet: FleetConfig, tmp_path: Path, **kwargs: Any) -> Any:
    return generate_month(store, fleet, MONTH, state_dir=tmp_path / "state", people_fn=people_in_month,
                          issued_on=ISSUED, **kwargs)  # fmt: skip


def test_month_invoices_from_store_rows(store: Store, fleet: FleetConfig, tmp_path: Path) -> None:
    outcomes = generate(store, fleet, tmp_path)
    assert [(o.community, o.created, o.error) for o in outcomes] == [
        ("hackweek", True, ""),
        ("uni-a", True, ""),
    ]
    hackweek, uni = (o.record for o in outcomes)
    assert (hackweek.number, uni.number) == ("DEMO-2026-0001", "DEMO-2026-0002")
    costs = hub_month_costs(store, MONTH)

    doc = uni.document
    lines = [(line["kind"], line["hub"], D(line["quantity"]), D(line["amount"])) for line in doc["lines"]]
    # 120 people on the prod hub (staging's 3 accounts do not count for the MAU fee)
    assert doc["mau"]["people"] == 120 and doc["mau"]["hubs"] == ["uni-a"]
    staging = cents(costs["uni-a-staging"]["USD"])
    prod = cents(costs["uni-a"]["USD"])
    assert staging > 0 and prod > staging  # staging's costs are passed through like any other
    assert lines == [
        ("fixed_fee", "", D(1), D("250.00")),
        ("mau", "", D(10), D(100)),
        ("mau", "", D(90), D(450)),
        ("mau", "", D(20), D("50.00")),
        ("pass_through", "uni-a", D(1), prod),
        ("pass_through", "uni-a-staging", D(1), staging),
    ]
    assert D(doc["total"]) == D("850.00") + prod + staging == uni.total
    assert doc["bill_to"]["name"] == "University A, Department of Physics"
    assert doc["purchase_order"] == "PO-2026-7731"
    assert doc["due_on"] == "2027-01-01" and doc["issuer"]["name"] == "hubfleet demo service"

    # hackweek pays in EUR: USD costs converted at the inverse of the fleet's EUR->USD 1.08; 10 % markup; VAT
    doc = hackweek.document
    assert doc["currency"] == "EUR"
    rate = D(1) / D("1.08")
    assert doc["exchange_rates"] == [{"source": "USD", "target": "EUR", "rate": str(rate)}]
    passed = {line["hub"]: D(line["amount"]) for line in doc["lines"] if line["kind"] == "pass_through"}
    described = [line["description"] for line in doc["lines"] if line["kind"] == "pass_through"]
    assert described == [f"Cloud costs, hub hackweek ({cents(costs['hackweek']['USD'])} USD)",
                         "Cloud costs, hub hackweek-staging"]  # fmt: skip
    assert passed == {"hackweek": cents(costs["hackweek"]["USD"] * rate), "hackweek-staging": D("0.00")}
    assert costs["hackweek"]["USD"] > D("12.35")  # its tagged row of the cloud bill, its price-sheet use
    assert sum(c["USD"] for c in costs.values()) > D("42.34")  # the bill's shared row went to the hubs
    markup = next(D(line["amount"]) for line in doc["lines"] if line["kind"] == "markup")
    assert markup == cents(sum(passed.values()) * D("0.10"))
    subtotal = D("400.00") + sum(passed.values()) + markup
    assert D(doc["subtotal"]) == subtotal
    assert D(doc["total"]) == subtotal + cents(subtotal * D("0.19"))
    assert any("converted at 1 USD = 0.925926 EUR (1 EUR = 1.08 USD" in note for note in doc["notes"])

    # the files: under <state>/invoices/<year>/, CSV and JSON equal to the stored document
    home = tmp_path / "state" / "invoices" / "2026"
    assert sorted(p.name for p in home.iterdir()) == [
        f"DEMO-2026-000{n}.{ext}" for n in (1, 2) for ext in ("csv", "json", "pdf")
    ]
    for record in (hackweek, uni):
        stored = get_invoice(store, record.number)
        assert stored is not None
        assert json.loads((home / f"{record.number}.json").read_text()) == stored.document
        rows = list(csv.DictReader(io.StringIO((home / f"{record.number}.csv").read_text())))
        assert [{k: r[k] for k in ("kind", "description", "hub", "quantity", "unit", "unit_price", "amount")}
                for r in rows] == stored.document["lines"]  # fmt: skip
        assert {r["currency"] for r in rows} == {record.currency}
        assert sum(D(r["amount"]) for r in rows) == record.total


def test_mau_of_all_stages_counts_a_person_on_two_hubs_once(
    store: Store, fleet: FleetConfig, tmp_path: Path
) -> None:
    standard = fleet.settings.costs.plans["standard"].model_copy(update={"mau_stages": "all"})
    costs = fleet.settings.costs.model_copy(
        update={"plans": {**fleet.settings.costs.plans, "standard": standard}}
    )
    every = dataclasses.replace(fleet, settings=fleet.settings.model_copy(update={"costs": costs}))
    [outcome] = generate(store, every, tmp_path, community="uni-a")
    mau = outcome.record.document["mau"]
    # 120 on prod, 3 on staging of whom student000 is also on prod: 122 people from 123 accounts
    assert (mau["people"], mau["accounts"], mau["hubs"]) == (122, 123, ["uni-a", "uni-a-staging"])
    assert [(m["identity"], m["accounts"]) for m in mau["merged"]] == [
        ("native:student000", [["uni-a", "student000"], ["uni-a-staging", "student000"]])
    ]
    notes = outcome.record.document["notes"]
    assert "2 accounts merged into 1 person:" in notes
    tiers = [
        (line["quantity"], line["amount"])
        for line in outcome.record.document["lines"]
        if line["kind"] == "mau"
    ]
    assert tiers == [("10", "100.00"), ("90", "450.00"), ("22", "55.00")]


def test_a_month_not_yet_allocated_is_allocated_before_its_invoice(
    fleet: FleetConfig, tmp_path: Path
) -> None:
    from hubfleet.costs.queries import month_state

    with open_store(tmp_path / "state") as fresh:
        add_usage(fresh, "uni-a", ["ada", "bob"])
        add_cloud_bill(fresh)  # imported, never allocated
        assert month_state(fresh, MONTH).allocated == 0
        [outcome] = generate(fresh, fleet, tmp_path, community="uni-a")
        assert "allocated 2026-11's costs first" in outcome.warnings[0]
        state = month_state(fresh, MONTH)
        assert state.allocated > 0 and not state.stale
        passed = [line for line in outcome.record.document["lines"] if line["kind"] == "pass_through"]
        assert D(passed[0]["amount"]) == cents(hub_month_costs(fresh, MONTH)["uni-a"]["USD"]) > 0
        again = generate(fresh, fleet, tmp_path, community="uni-a")[0]
        assert again.warnings == []  # up to date: not allocated again


def test_generating_again_changes_nothing(store: Store, fleet: FleetConfig, tmp_path: Path) -> None:
    first = generate(store, fleet, tmp_path, community="uni-a")[0]
    pdf = tmp_path / "state" / "invoices" / "2026" / f"{first.record.number}.pdf"
    original = pdf.read_bytes()
    pdf.unlink()
    again = generate(store, fleet, tmp_path, community="uni-a")[0]
    assert (again.created, again.record.number, again.warnings) == (False, first.record.number, [])
    assert pdf.read_bytes() == original  # written again, identically, from the stored document
    # more people later: the issued invoice stays as it is, the outcome says to issue a credit note
    add_usage(store, "uni-a", ["late1", "late2"], day=28)
    third = generate(store, fleet, tmp_path, community="uni-a")[0]
    assert third.created is False and third.record.total == first.record.total
    assert f"with total {first.record.total} USD" in third.warnings[0]
    assert "issue a credit note" in third.warnings[0]
    assert numbers(store) == ["DEMO-2026-0001"]
    # the next community still gets the next number: the checks used none
    assert generate(store, fleet, tmp_path, community="hackweek")[0].record.number == "DEMO-2026-0002"


def test_a_failure_while_issuing_leaves_no_invoice_and_no_gap(
    store: Store, fleet: FleetConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hubfleet.costs import invoices

    real = invoices.file_contents

    def broken(doc: dict[str, Any], pdf: bytes | None = None) -> dict[str, bytes]:
        assert doc["number"] == "DEMO-2026-0001"  # numbered inside the transaction, then it fails
        raise OSError("disk full")

    monkeypatch.setattr(invoices, "file_contents", broken)
    with pytest.raises(OSError, match="disk full"):
        generate(store, fleet, tmp_path, community="uni-a")
    assert list_invoices(store) == []
    monkeypatch.setattr(invoices, "file_contents", real)
    outcomes = generate(store, fleet, tmp_path)
    assert [o.record.number for o in outcomes] == ["DEMO-2026-0001", "DEMO-2026-0002"]


def test_a_missing_exchange_rate_means_no_invoice_for_that_community(
    store: Store, fleet: FleetConfig, tmp_path: Path
) -> None:
    costs = fleet.settings.costs.model_copy(update={"exchange_rates": []})
    no_rates = dataclasses.replace(fleet, settings=fleet.settings.model_copy(update={"costs": costs}))
    hackweek, uni = generate(store, no_rates, tmp_path)
    assert hackweek.record is None and uni.created
    assert "no exchange rate from USD to EUR for 2026-11" in hackweek.error
    assert "costs.exchange_rates" in hackweek.error
    assert [r.community for r in list_invoices(store)] == ["uni-a"]


def test_months_that_cannot_be_invoiced(store: Store, fleet: FleetConfig, tmp_path: Path) -> None:
    for bad, message in [("2026-13", "not a month"), ("11-2026", "not a month"), ("2027-01", "not begun")]:
        with pytest.raises(UserError, match=message):
            generate_month(store, fleet, bad, state_dir=tmp_path, people_fn=people_in_month, issued_on=ISSUED)
    current = generate_month(store, fleet, "2026-12", state_dir=tmp_path / "s", people_fn=people_in_month,
                             issued_on=ISSUED, community="uni-a")  # fmt: skip
    assert "not over yet" in current[0].warnings[0]
    with pytest.raises(UserError, match="no community named 'uni-b'.*uni-a"):
        generate(store, fleet, tmp_path, community="uni-b")


# --------------------------------------------------------------------------- credit notes


def test_credit_notes(store: Store, fleet: FleetConfig, tmp_path: Path) -> None:
    hackweek, uni = (o.record for o in generate(store, fleet, tmp_path))
    state = tmp_path / "state"
    with pytest.raises(UserError, match=f"more than what is outstanding on {uni.number}"):
        credit_note(store, fleet, uni.number, uni.total + D("0.01"), "too much", state_dir=state,
                    issued_on=ISSUED)  # fmt: skip
    note, files = credit_note(store, fleet, uni.number, D("100.00"), "two test accounts counted",
                              state_dir=state, issued_on=ISSUED)  # fmt: skip
    assert note.number == "DEMO-2026-0003" and note.kind == "credit_note" and note.refers_to == uni.number
    assert note.total == D("-100.00")
    assert outstanding(store, uni.number) == uni.total - D(100)
    assert [p.name for p in files] == [f"{note.number}.{ext}" for ext in ("pdf", "csv", "json")]
    rest = outstanding(store, uni.number)
    with pytest.raises(UserError, match=f"outstanding on {uni.number}: {rest} USD"):
        credit_note(store, fleet, uni.number, rest + D("0.01"), "x", state_dir=state, issued_on=ISSUED)
    last, _ = credit_note(store, fleet, uni.number, rest, "written off", state_dir=state, issued_on=ISSUED)
    assert outstanding(store, uni.number) == 0 and last.number == "DEMO-2026-0004"

    # with tax: the amount includes it, split at the invoice's rate
    taxed, _ = credit_note(store, fleet, hackweek.number, D("119.00"), "a day less", state_dir=state,
                           issued_on=ISSUED)  # fmt: skip
    assert [(line["kind"], line["amount"]) for line in taxed.document["lines"]] == [
        ("credit_note", "-100.00"),
        ("tax", "-19.00"),
    ]
    with pytest.raises(UserError, match="is a credit note; credit the invoice it refers to"):
        credit_note(store, fleet, taxed.number, D(1), "x", state_dir=state)
    with pytest.raises(UserError, match="no invoice numbered 'DEMO-2026-0009'"):
        credit_note(store, fleet, "DEMO-2026-0009", D(1), "x", state_dir=state)
    with pytest.raises(UserError, match="--reason is empty"):
        credit_note(store, fleet, hackweek.number, D(1), "  ", state_dir=state)
    for text, message in [("0", "more than 0"), ("-5", "more than 0"), ("1.005", "two decimals"),
                          ("ten", "not a number"), ("NaN", "more than 0")]:  # fmt: skip
        with pytest.raises(UserError, match=message):
            parse_amount(text)
    assert numbers(store) == [f"DEMO-2026-000{n}" for n in range(1, 6)]
    assert csv_text(taxed.document).count("\n") == 3


# --------------------------------------------------------------------------- two processes at once


def _issue_many(url: str, worker: int, count: int, start: Any) -> list[str]:
    import time

    with open_store(url) as opened:
        start.wait()
        made = []
        for index in range(count):
            community = "shared" if index == count // 2 else f"c{worker}-{index}"
            issued = issue(opened, kind="invoice", community=community, month=MONTH,
                           document={"currency": "USD", "total": "1.00", "lines": []}, prefix="INV-",
                           issued_on=ISSUED, due_on=ISSUED,
                           prepare=lambda doc: time.sleep(0.002))  # fmt: skip
            if issued.created:
                made.append(issued.record.number)
        return made


def test_two_processes_issuing_at_once_share_one_gap_free_sequence(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hubfleet.sqlite'}"
    open_store(url).close()
    context = multiprocessing.get_context("fork")  # the children open their own store
    with context.Manager() as manager:
        start = manager.Event()
        with context.Pool(2) as pool:
            results = [pool.apply_async(_issue_many, (url, worker, 25, start)) for worker in (1, 2)]
            start.set()
            made = [r.get(timeout=120) for r in results]
    everything = sorted(made[0] + made[1])
    # 2 x 25 attempts, one community ("shared") issued by only one of them: 49 invoices, numbers 1..49
    assert len(everything) == len(set(everything)) == 49
    assert everything == [f"INV-2026-{n:04d}" for n in range(1, 50)]
    with open_store(url) as opened:
        assert len([r for r in list_invoices(opened) if r.community == "shared"]) == 1


# --------------------------------------------------------------------------- the CLI


def test_cli_generate_list_show_credit(tmp_path: Path, fleet: FleetConfig) -> None:
    from fleet_helpers import copy_demo_fleet, hubfleet

    root = copy_demo_fleet(tmp_path / "fleet")
    state, out = tmp_path / "state", tmp_path / "out"
    with open_store(state) as opened:
        add_usage(opened, "uni-a", [f"student{i:03d}" for i in range(12)])
        allocate(opened, fleet)
    year = datetime.now(UTC).year
    first = hubfleet("invoices", "generate", "--month", MONTH, "--out", str(out), "--state-dir", str(state),
                     fleet=root, check=True)  # fmt: skip
    assert f"hackweek: issued DEMO-{year}-0001 for {MONTH}" in first.stdout
    assert f"uni-a: issued DEMO-{year}-0002 for {MONTH}, total " in first.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        f"DEMO-{year}-000{n}.{ext}" for n in (1, 2) for ext in ("csv", "json", "pdf")
    ]
    number = f"DEMO-{year}-0002"
    shown = hubfleet("invoices", "show", number, "--state-dir", str(state), fleet=root, check=True)
    assert "Active people, tier 11-100" in shown.stdout and "PO PO-2026-7731" in shown.stdout
    too_much = hubfleet("invoices", "credit", number, "--amount", "100000", "--reason", "x",
                        "--state-dir", str(state), fleet=root)  # fmt: skip
    assert too_much.returncode == 1 and f"more than what is outstanding on {number}" in too_much.stderr
    credited = hubfleet("invoices", "credit", number, "--amount", "10.50", "--reason", "a test account",
                        "--json", "--state-dir", str(state), fleet=root, check=True)  # fmt: skip
    assert json.loads(credited.stdout)["total"] == "-10.50"
    listed = json.loads(hubfleet("invoices", "list", "--community", "uni-a", "--json", "--state-dir",
                                 str(state), fleet=root, check=True).stdout)  # fmt: skip
    assert [(r["number"], r["kind"], r["refers_to"]) for r in listed] == [
        (number, "invoice", None),
        (f"DEMO-{year}-0003", "credit_note", number),
    ]
    assert D(listed[0]["outstanding"]) == D(listed[0]["total"]) - D("10.50")

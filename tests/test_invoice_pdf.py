"""The invoice PDF read back with pypdf: number, dates, addresses, every line, totals, notes, page numbers
on a long invoice, names outside latin-1, and the same bytes from the same stored document."""

from __future__ import annotations

import dataclasses
import io
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models_costs import BillingContact
from hubfleet.config.validate import load_fleet
from hubfleet.costs.invoice_pdf import latin1, render_pdf
from hubfleet.costs.invoices import build_document

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo-fleet"
D = Decimal


@dataclasses.dataclass
class People:
    people: int
    accounts: int
    merged: list[Any] = dataclasses.field(default_factory=list)


@pytest.fixture(scope="module")
def fleet() -> FleetConfig:
    return load_fleet(DEMO)


def pages(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def numbered(doc: dict[str, Any], number: str = "DEMO-2026-0007") -> dict[str, Any]:
    return {**doc, "number": number}


def uni_a(fleet: FleetConfig, **costs: dict[str, Decimal]) -> dict[str, Any]:
    merged = [("oidc:ada@uni-a.example", [("uni-a", "ada"), ("uni-a", "ada2")], "same OIDC sub")]
    return numbered(
        build_document(
            fleet,
            fleet.communities["uni-a"],
            "2026-11",
            people=People(250, 251, merged),
            costs=costs or {"uni-a": {"USD": D("1234.565")}, "uni-a-staging": {"USD": D("7.5")}},
            issued_on=date(2026, 12, 2),
        )  # fmt: skip
    )


def test_the_pdf_reads_back_as_the_invoice(fleet: FleetConfig) -> None:
    doc = uni_a(fleet)
    [text] = pages(render_pdf(doc))
    for expected in [
        "hubfleet demo service",
        "1 Example Street",
        "billing@hubfleet.example",
        "INVOICE",
        "DEMO-2026-0007",
        "2026-12-02",  # issued
        "2027-01-01",  # due after 30 days
        "2026-11-01 to 2026-11-30",
        "PO-2026-7731",
        "BILL TO",
        "University A, Department of Physics",
        "Physics Building",
        "accounts@uni-a.example",
        "Amount (USD)",
        "Service fee (monthly) 1 250.00 250.00",
        "Active people, tier 1-10 10 10.00 100.00",
        "Active people, tier 11-100 90 5.00 450.00",
        "Active people, tier 101-1,000 150 2.50 375.00",
        "Cloud costs, hub uni-a 1 1,234.56 1,234.56",  # half to even
        "Cloud costs, hub uni-a-staging 1 7.50 7.50",
        "Subtotal 2,417.06 USD",
        "Total 2,417.06 USD",
        "Monthly active people: 250 (251 accounts on prod hubs: uni-a)",
        "2 accounts merged into 1 person:",
        "oidc:ada@uni-a.example: uni-a/ada, uni-a/ada2 (same OIDC sub)",
        "Payment",
        "Example Bank, IBAN XX00 0000 0000 0000 0000 00, BIC EXAMPLEXXX",
        "Reference: DEMO-2026-0007",
        "Page 1 of 1",
    ]:
        assert expected in text, expected
    assert D(doc["total"]) == D("2417.06")


def test_a_long_invoice_has_page_numbers_and_repeats_the_table_head(fleet: FleetConfig) -> None:
    hubs = {
        f"course-{i:03d}": fleet.hubs["uni-a"].model_copy(update={"name": f"course-{i:03d}"})
        for i in range(90)
    }
    big = dataclasses.replace(fleet, hubs={**fleet.hubs, **hubs})
    doc = uni_a(big, **{name: {"USD": D(i) + D("0.25")} for i, name in enumerate(hubs)})
    texts = pages(render_pdf(doc))
    assert len(texts) >= 3
    for number, text in enumerate(texts, 1):
        assert f"Page {number} of {len(texts)}" in text
        assert "Invoice DEMO-2026-0007" in text
    for number, text in enumerate(texts[:-1], 1):
        assert "Description" in text and "Amount (USD)" in text, f"page {number} lacks the table head"
    everything = "\n".join(texts)
    for i in range(90):
        assert f"Cloud costs, hub course-{i:03d} 1 {i}.25 {i}.25" in everything
    assert f"Total {D(doc['total']):,.2f} USD" in texts[-1]


def test_names_outside_latin1_are_transliterated(fleet: FleetConfig) -> None:
    community = fleet.communities["uni-a"]
    billing = community.billing.model_copy(
        update={
            "bill_to": BillingContact(
                name="Uniwersytet Łódzki – Wydział Fizyki", address=["ul. Pomorska 149/153", "Łódź", "Ελλάδα"]
            )
        }
    )
    other = dataclasses.replace(
        fleet, communities={**fleet.communities, "uni-a": community.model_copy(update={"billing": billing})}
    )
    doc = uni_a(other)
    text = pages(render_pdf(doc))[0]
    assert "Uniwersytet Lódzki - Wydzial Fizyki" in text  # ó is latin-1, ł is not
    assert "Lódz" in text and "?" in text  # Greek has no latin-1 letters: marked, not dropped silently
    assert latin1("Café “quoted” €5 ß Œ") == 'Café "quoted" EUR5 ß OE'


def test_the_same_document_gives_the_same_bytes(fleet: FleetConfig) -> None:
    doc = uni_a(fleet)
    assert render_pdf(doc) == render_pdf(dict(doc))
    assert render_pdf(doc) != render_pdf(numbered(doc, "DEMO-2026-0008"))


def test_a_credit_note_reads_back(fleet: FleetConfig) -> None:
    doc = uni_a(fleet)
    line = {"kind": "credit_note", "description": "Credit on invoice DEMO-2026-0007: a test account",
            "hub": "",
            "quantity": "1", "unit": "credit", "unit_price": "-10.00", "amount": "-10.00"}  # fmt: skip
    note = {**doc, "kind": "credit_note", "number": "DEMO-2026-0009", "refers_to": "DEMO-2026-0007",
            "lines": [line], "subtotal": "-10.00", "tax": "0", "total": "-10.00",
            "notes": ["This credit note reduces invoice"]}  # fmt: skip
    [text] = pages(render_pdf(note))
    for expected in ["CREDIT NOTE", "DEMO-2026-0009", "For invoice DEMO-2026-0007",
                     "Credit on invoice DEMO-2026-0007: a test account 1 -10.00 -10.00", "Total -10.00 USD",
                     "Credit note DEMO-2026-0009"]:  # fmt: skip
        assert expected in text, expected
    assert "Payment\n" not in text and "Reference:" not in text  # a credit note is not paid

"""A month's invoice per community, and credit notes: from the plan (plans.py), the month's monthly active
people and the hubs' cloud costs to a numbered document in the store, written as PDF, CSV and JSON.

The stored document is the truth (store/invoices.py); the files are written from it, to
`<state_dir>/invoices/<year>/<number>.{pdf,csv,json}`, and again identically whenever asked. An issued
invoice is never changed: generating a month again finds it and does nothing; a correction is a credit note.

The month's people come from a function passed in (`hubfleet.monitor.usage.people_in_month`: the costs
package may not import monitor), its costs from `hubfleet.costs.queries.hub_month_costs` unless one is given
(the month is allocated first when its allocation is missing or stale).
"""

from __future__ import annotations

import calendar
import csv
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol

from hubfleet.clock import utcnow
from hubfleet.config.fleet import FleetConfig
from hubfleet.config.models import Community
from hubfleet.config.models_costs import PricePlan
from hubfleet.costs.money import MissingRate, cents, rate_for
from hubfleet.costs.plans import price_month
from hubfleet.settings import UserError
from hubfleet.store.invoices import (
    InvoiceRecord,
    Refused,
    credited,
    get_invoice,
    issue,
    list_invoices,
)
from hubfleet.suggest import suggestion

FORMATS = ("pdf", "csv", "json")
CSV_COLUMNS = (
    "number",
    "line",
    "kind",
    "description",
    "hub",
    "quantity",
    "unit",
    "unit_price",
    "amount",
    "currency",
)
MERGES_SHOWN = 10


class PeopleCount(Protocol):
    """What `people_in_month` returns (hubfleet.monitor.usage.PeopleCount)."""

    people: int
    accounts: int
    merged: Sequence[tuple[str, Sequence[tuple[str, str]], str]]


PeopleFn = Callable[[Any, str, Sequence[str] | None], PeopleCount]
CostsFn = Callable[[Any, str, Sequence[str] | None], dict[str, dict[str, Decimal]]]


def _hub_month_costs(store: Any, month: str, hubs: Sequence[str] | None) -> dict[str, dict[str, Decimal]]:
    from hubfleet.costs.queries import hub_month_costs

    return hub_month_costs(store, month, hubs)


@dataclass
class Outcome:
    """What `generate_month` did for one community."""

    community: str
    record: InvoiceRecord | None = None
    created: bool = False
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------- checks


def check_month(month: str, today: date) -> list[str]:
    """A YYYY-MM that is not in the future; a warning when it is the current month (not over yet)."""
    try:
        first = date(int(month[0:4]), int(month[5:7]), 1)
        if len(month) != 7 or month[4] != "-":
            raise ValueError
    except ValueError:
        raise UserError(f"'{month}' is not a month; write YYYY-MM, for example 2026-11") from None
    if first > today:
        raise UserError(f"{month} has not begun yet (today is {today}); invoices are for past months")
    if (first.year, first.month) == (today.year, today.month):
        return [f"{month} is not over yet: the invoice counts use and costs until now and is never changed"]
    return []


def plan_of(fleet: FleetConfig, community: Community) -> PricePlan | None:
    name = community.billing.plan
    if name is None:
        return None
    plan = fleet.settings.costs.plans.get(name)
    if plan is None:  # validate reports this too; say it here for a fleet loaded without validation
        hint = suggestion(name, sorted(fleet.settings.costs.plans), "plans", "plans: none")
        raise UserError(f"community '{community.name}' names plan '{name}', which fleet.yaml lacks; {hint}")
    return plan


def billed_communities(fleet: FleetConfig, only: str | None = None) -> list[Community]:
    """The communities that get an invoice (those with `billing.plan`); `only` must be one of them."""
    if only is None:
        return [c for name, c in sorted(fleet.communities.items()) if c.billing.plan]
    community = fleet.communities.get(only)
    if community is None:
        hint = suggestion(only, sorted(fleet.communities), "communities", "communities: none")
        raise UserError(f"no community named '{only}'; {hint}")
    if not community.billing.plan:
        raise UserError(
            f"community '{only}' has no price plan: set `billing.plan` in its community.yaml to one of "
            f"fleet.yaml `costs.plans` ({', '.join(sorted(fleet.settings.costs.plans)) or 'none yet'})"
        )
    return [community]


# --------------------------------------------------------------------------- building


def month_bounds(month: str) -> tuple[date, date]:
    year, number = int(month[:4]), int(month[5:7])
    return date(year, number, 1), date(year, number, calendar.monthrange(year, number)[1])


def _bill_to(community: Community) -> dict[str, Any]:
    contact = community.billing.bill_to
    if contact is not None:
        return {
            "name": contact.name,
            "email": contact.email or "",
            "address": list(contact.address),
            "attention": "",
        }
    first = community.contacts[0] if community.contacts else None
    attention = f"Attn. {first.name}" if first else ""
    return {
        "name": community.display_name or community.name,
        "email": (first.email or "") if first else "",
        "address": [],
        "attention": attention,
    }


def _issuer(fleet: FleetConfig) -> dict[str, Any]:
    invoicing = fleet.settings.costs.invoicing
    return {
        "name": invoicing.issuer,
        "address": list(invoicing.address),
        "email": invoicing.email or "",
        "tax_id": invoicing.tax_id,
        "payment_details": list(invoicing.payment_details),
    }


def _rate(rate: Decimal) -> str:
    """A rate as printed: at most 6 decimals (the invoice's maths uses it unrounded)."""
    return f"{rate.quantize(Decimal('0.000001')).normalize():f}"


def _people_notes(people: PeopleCount, hubs: list[str], stages: str) -> list[str]:
    which = "all hubs" if stages == "all" else "prod hubs"
    notes = [
        f"Monthly active people: {people.people:,} ({people.accounts:,} accounts on {which}: "
        f"{', '.join(hubs) or 'none'}); a person with accounts on several hubs counts once."
    ]
    merged = list(people.merged)
    if merged:
        accounts = sum(len(found) for _, found, _ in merged)
        people_word = "person" if len(merged) == 1 else "people"
        notes.append(f"{accounts:,} accounts merged into {len(merged):,} {people_word}:")
        for identity, found, why in merged[:MERGES_SHOWN]:
            names = ", ".join(f"{hub}/{username}" for hub, username in found)
            notes.append(f"  {identity}: {names} ({why})")
        if len(merged) > MERGES_SHOWN:
            notes.append(f"  ... and {len(merged) - MERGES_SHOWN:,} more (hubfleet usage --month).")
    return notes


def build_document(
    fleet: FleetConfig,
    community: Community,
    month: str,
    *,
    people: PeopleCount,
    costs: dict[str, dict[str, Decimal]],
    issued_on: date,
) -> dict[str, Any]:
    """The invoice document (without its number) of `community` for `month`. Raises MissingRate when a hub's
    costs are in a currency the fleet has no rate for into the plan's."""
    plan = plan_of(fleet, community)
    assert plan is not None
    settings = fleet.settings.costs
    hubs = sorted(name for name, hub in fleet.hubs.items() if hub.community == community.name)
    counted = [h for h in hubs if plan.mau_stages == "all" or fleet.hubs[h].stage == "prod"]
    pass_through: dict[str, Decimal] = {}
    rates: dict[str, Decimal] = {}
    source: dict[str, str] = {}
    for hub in hubs:
        total = Decimal(0)
        for currency, amount in sorted(costs.get(hub, {}).items()):
            if currency != plan.currency:
                rates[currency] = rate_for(settings.exchange_rates, currency, plan.currency, month)
                total += amount * rates[currency]
            else:
                total += amount
        others = sorted(c for c in costs.get(hub, {}) if c != plan.currency)
        if others:
            source[hub] = ", ".join(f"{cents(costs[hub][c])} {c}" for c in others)
        pass_through[hub] = total
    priced = price_month(plan, month, people=people.people, pass_through=pass_through, source=source)
    first, last = month_bounds(month)
    due = issued_on + timedelta(days=settings.invoicing.payment_terms_days)
    notes = _people_notes(people, counted, plan.mau_stages)
    for currency, rate in sorted(rates.items()):
        notes.append(
            f"Cloud costs in {currency} converted at 1 {currency} = {_rate(rate)} {plan.currency} "
            f"(1 {plan.currency} = {_rate(1 / rate)} {currency}; fleet.yaml `costs.exchange_rates`, {month})."
        )
    notes += priced.notes
    notes.append(
        f"Payment due within {settings.invoicing.payment_terms_days} days, by {due}; "
        "please quote the invoice number."
    )
    return {
        "kind": "invoice",
        "community": community.name,
        "month": month,
        "plan": community.billing.plan,
        "currency": plan.currency,
        "issued_on": issued_on.isoformat(),
        "due_on": due.isoformat(),
        "period": {"first": first.isoformat(), "last": last.isoformat()},
        "issuer": _issuer(fleet),
        "bill_to": _bill_to(community),
        "purchase_order": community.billing.purchase_order,
        "refers_to": None,
        "lines": [line.to_json() for line in priced.lines],
        "subtotal": str(priced.subtotal),
        "tax": str(priced.tax),
        "total": str(priced.total),
        "mau": {
            "people": people.people,
            "accounts": people.accounts,
            "hubs": counted,
            "merged": [
                {"identity": i, "accounts": [list(a) for a in found], "why": why}
                for i, found, why in people.merged
            ],
        },
        "exchange_rates": [
            {"source": c, "target": plan.currency, "rate": str(r)} for c, r in sorted(rates.items())
        ],
        "notes": notes,
    }


# --------------------------------------------------------------------------- files


def csv_text(doc: dict[str, Any]) -> str:
    """The document's lines, one CSV row each (totals are their sum: subtotal without tax lines)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for index, line in enumerate(doc["lines"], 1):
        writer.writerow(
            [
                doc["number"],
                index,
                line["kind"],
                line["description"],
                line["hub"],
                line["quantity"],
                line["unit"],
                line["unit_price"],
                line["amount"],
                doc["currency"],
            ]
        )
    return buffer.getvalue()


def json_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def file_contents(doc: dict[str, Any], pdf: bytes | None = None) -> dict[str, bytes]:
    from hubfleet.costs.invoice_pdf import render_pdf  # here: fpdf costs the daemon's start ~0.4 s of CPU

    return {
        "pdf": pdf if pdf is not None else render_pdf(doc),
        "csv": csv_text(doc).encode(),
        "json": json_text(doc).encode(),
    }


def invoice_dir(state_dir: Path, record: InvoiceRecord | dict[str, Any]) -> Path:
    issued = record["issued_on"] if isinstance(record, dict) else record.issued_on.isoformat()
    return state_dir / "invoices" / issued[:4]


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def write_files(
    doc: dict[str, Any], state_dir: Path, out: Path | None = None, contents: dict[str, bytes] | None = None
) -> list[Path]:
    """Write the document's PDF, CSV and JSON under the state directory (and copies into `out`)."""
    contents = contents or file_contents(doc)
    written = []
    for directory in [invoice_dir(state_dir, doc), *([out] if out else [])]:
        for ext in FORMATS:
            path = directory / f"{doc['number']}.{ext}"
            _write(path, contents[ext])
            written.append(path)
    return written


def ensure_files(record: InvoiceRecord, state_dir: Path, out: Path | None = None) -> list[Path]:
    """Write the record's files again where missing (always into `out`)."""
    home = invoice_dir(state_dir, record)
    missing = any(not (home / f"{record.number}.{ext}").exists() for ext in FORMATS)
    if missing:
        return write_files(record.document, state_dir, out)
    return write_files(record.document, out, None) if out else []


# --------------------------------------------------------------------------- generating


def ensure_allocated(store: Any, fleet: FleetConfig, month: str, today: date) -> str:
    """Allocate `month` first when its allocation is missing or older than an import, or (price sheets) the
    month is still running: an issued invoice never changes, so it must not be made from stale figures.
    Returns a note when it allocated."""
    from hubfleet.costs.allocation import allocate_month
    from hubfleet.costs.queries import month_state

    state = month_state(store, month)
    sheets = any(c.costs.price_sheet for c in fleet.clusters.values())
    current = month == today.strftime("%Y-%m")
    if state.stale or (state.allocated == 0 and (state.imports or sheets)) or (sheets and current):
        allocate_month(store, fleet, month)
        return (
            f"allocated {month}'s costs first (the allocation was missing, older than an import or running)"
        )
    return ""


def generate_month(
    store: Any,
    fleet: FleetConfig,
    month: str,
    *,
    state_dir: Path,
    people_fn: PeopleFn,
    costs_fn: CostsFn | None = None,
    community: str | None = None,
    out: Path | None = None,
    issued_on: date | None = None,
    actor: str = "",
) -> list[Outcome]:
    """Issue `month`'s invoice for every community with a plan (or just `community`). A community whose
    invoice exists keeps it (its outcome says whether today's figures differ); a community whose invoice
    cannot be made (a missing exchange rate) gets an error and no invoice, and the others go on."""
    today = issued_on or utcnow().date()
    warnings = check_month(month, today)
    if costs_fn is None:
        billed_communities(fleet, community)  # a bad --community is an error before anything is allocated
        note = ensure_allocated(store, fleet, month, today)
        warnings += [note] if note else []
        costs_fn = _hub_month_costs
    prefix = fleet.settings.costs.invoicing.number_prefix
    outcomes = []
    for found in billed_communities(fleet, community):
        outcome = Outcome(found.name, warnings=list(warnings))
        outcomes.append(outcome)
        plan = plan_of(fleet, found)
        assert plan is not None
        hubs = sorted(name for name, hub in fleet.hubs.items() if hub.community == found.name)
        counted = [h for h in hubs if plan.mau_stages == "all" or fleet.hubs[h].stage == "prod"]
        try:
            people = people_fn(store, month, counted)
            costs = costs_fn(store, month, hubs) if hubs else {}
            doc = build_document(fleet, found, month, people=people, costs=costs, issued_on=today)
        except MissingRate as exc:
            outcome.error = f"{found.name}: no invoice: {exc}"
            continue
        rendered: dict[str, bytes] = {}

        def prepare(numbered: dict[str, Any], rendered: dict[str, bytes] = rendered) -> None:
            rendered.update(file_contents(numbered))

        issued = issue(
            store,
            kind="invoice",
            community=found.name,
            month=month,
            document=doc,
            prefix=prefix,
            issued_on=today,
            due_on=date.fromisoformat(doc["due_on"]),
            prepare=prepare,
            actor=actor,
        )
        outcome.record, outcome.created = issued.record, issued.created
        if issued.created:
            outcome.files = write_files(issued.record.document, state_dir, out, rendered)
            continue
        outcome.files = ensure_files(issued.record, state_dir, out)
        if Decimal(doc["total"]) != issued.record.total:
            outcome.warnings.append(
                f"{issued.record.number} was issued for {month} with total {issued.record.total} "
                f"{issued.record.currency}; the figures now give {doc['total']} {doc['currency']}. An issued "
                f"invoice is never changed: issue a credit note (hubfleet invoices credit "
                f"{issued.record.number} --amount X --reason ...) for an amount charged too much"
            )
    return outcomes


# --------------------------------------------------------------------------- credit notes


def parse_amount(text: str) -> Decimal:
    """A positive amount with at most two decimals."""
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise UserError(f"--amount '{text}' is not a number; write it like 12.50") from None
    if not amount.is_finite() or amount <= 0:
        raise UserError(f"--amount must be more than 0 (got {text})")
    if amount != cents(amount):
        raise UserError(f"--amount {text} has more than two decimals; invoices are exact to the cent")
    return cents(amount)


def credit_note(
    store: Any,
    fleet: FleetConfig,
    number: str,
    amount: Decimal,
    reason: str,
    *,
    state_dir: Path,
    out: Path | None = None,
    issued_on: date | None = None,
    actor: str = "",
) -> tuple[InvoiceRecord, list[Path]]:
    """A credit note of `amount` (tax included, split at the invoice's rate) against invoice `number`:
    numbered from the same sequence; never more than what the invoice still has outstanding."""
    reason = reason.strip()
    if not reason:
        raise UserError("--reason is empty: say why the invoice is corrected (it is printed on the note)")
    invoice = get_invoice(store, number)
    if invoice is None:
        known = [r.number for r in list_invoices(store) if r.kind == "invoice"]
        raise UserError(
            f"no invoice numbered '{number}'; {suggestion(number, known, 'invoices', 'none yet')}"
        )
    if invoice.kind != "invoice":
        raise UserError(f"{number} is a credit note; credit the invoice it refers to ({invoice.refers_to})")
    today = issued_on or utcnow().date()
    doc = invoice.document
    tax_line = next((line for line in doc["lines"] if line["kind"] == "tax"), None)
    lines = []
    net = amount
    if tax_line is not None:
        rate = Decimal(tax_line["unit_price"])
        net = cents(amount / (1 + rate))
    lines.append(
        {
            "kind": "credit_note",
            "description": f"Credit on invoice {number}: {reason}",
            "hub": "",
            "quantity": "1",
            "unit": "credit",
            "unit_price": str(-net),
            "amount": str(-net),
        }
    )
    if tax_line is not None:
        tax = amount - net
        lines.append({**tax_line, "quantity": str(-net), "amount": str(-tax)})
    note = {
        "kind": "credit_note",
        "community": invoice.community,
        "month": invoice.month,
        "plan": doc.get("plan"),
        "currency": invoice.currency,
        "issued_on": today.isoformat(),
        "due_on": today.isoformat(),
        "period": doc["period"],
        "issuer": doc["issuer"],
        "bill_to": doc["bill_to"],
        "purchase_order": doc.get("purchase_order", ""),
        "refers_to": number,
        "reason": reason,
        "lines": lines,
        "subtotal": str(-net),
        "tax": str(-(amount - net)),
        "total": str(-amount),
        "notes": [
            f"This credit note reduces invoice {number} (issued {invoice.issued_on}, total "
            f"{invoice.total} {invoice.currency}) by {amount} {invoice.currency}. Reason: {reason}"
        ],
    }

    def check(session: Any) -> None:
        left = invoice.total - credited(session, number)
        if amount > left:
            raise Refused(
                f"--amount {amount} {invoice.currency} is more than what is outstanding on {number}: "
                f"{left} {invoice.currency} (total {invoice.total}, credited {invoice.total - left})"
            )

    rendered: dict[str, bytes] = {}
    try:
        issued = issue(
            store,
            kind="credit_note",
            community=invoice.community,
            month=invoice.month,
            document=note,
            prefix=fleet.settings.costs.invoicing.number_prefix,
            issued_on=today,
            due_on=today,
            refers_to=number,
            check=check,
            prepare=lambda numbered: rendered.update(file_contents(numbered)),
            actor=actor,
        )
    except Refused as exc:
        raise UserError(str(exc)) from None
    return issued.record, write_files(issued.record.document, state_dir, out, rendered)

"""`hubfleet invoices generate|credit|list`: each community's monthly invoice from its price plan."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer

from hubfleet.cli.app import app
from hubfleet.cli.common import (
    FleetOption,
    JsonOption,
    StateDirOption,
    console,
    err_console,
    friendly_errors,
    load_or_explain,
)
from hubfleet.settings import UserError, resolve_fleet_dir, resolve_state_dir

invoices_app = typer.Typer(help="Invoices: generate a month's, issue credit notes, list them.")
app.add_typer(invoices_app, name="invoices")


def _people_fn():  # noqa: ANN202 - hubfleet.costs.invoices.PeopleFn
    from hubfleet.monitor.usage import people_in_month

    return people_in_month


@invoices_app.command("generate")
@friendly_errors
def generate(
    month: Annotated[str, typer.Option("--month", help="The month to invoice, YYYY-MM.", show_default=False)],
    community: Annotated[
        str | None, typer.Option("--community", help="Only this community (default: every one with a plan).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also copy the PDF, CSV and JSON files into this directory.")
    ] = None,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issue the month's invoice of every community with a price plan: numbered, stored, and written as PDF,
    CSV and JSON to <state-dir>/invoices/<year>/. A month invoiced already is left as it is."""
    from hubfleet.costs.invoices import generate_month
    from hubfleet.deploy.audit import deploy_actor
    from hubfleet.store import open_store

    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    state = resolve_state_dir(fleet_dir, state_dir)
    with open_store(state) as store:
        outcomes = generate_month(
            store,
            config,
            month,
            state_dir=state,
            people_fn=_people_fn(),
            community=community,
            out=out,
            actor=deploy_actor(fleet_dir, "hubfleet invoices generate"),
        )
    if as_json:
        typer.echo(json.dumps([_outcome_json(o) for o in outcomes], indent=2))
    else:
        for outcome in outcomes:
            _print_outcome(outcome)
    if not outcomes:
        err_console.print(
            "no community has a price plan: set `billing.plan` in a community.yaml", markup=False
        )
    if any(o.error for o in outcomes):
        raise typer.Exit(1)


def _outcome_json(outcome: Any) -> dict[str, Any]:
    record = outcome.record
    return {
        "community": outcome.community,
        "created": outcome.created,
        "invoice": record.summary() if record else None,
        "error": outcome.error or None,
        "warnings": outcome.warnings,
        "files": [str(path) for path in outcome.files],
    }


def _print_outcome(outcome: Any) -> None:
    for warning in outcome.warnings:
        err_console.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    if outcome.error:
        err_console.print(f"error: {outcome.error}", markup=False, highlight=False, soft_wrap=True)
        return
    record = outcome.record
    what = "issued" if outcome.created else "exists, unchanged:"
    console.print(
        f"{outcome.community}: {what} {record.number} for {record.month}, "
        f"total {record.total} {record.currency}",
        markup=False,
        highlight=False,
    )
    if outcome.files:
        console.print(f"  {outcome.files[0].with_suffix('.{pdf,csv,json}')}", markup=False, highlight=False)


@invoices_app.command("credit")
@friendly_errors
def credit(
    number: Annotated[str, typer.Argument(help="The invoice's number.")],
    amount: Annotated[
        str, typer.Option("--amount", help="How much to credit, tax included.", show_default=False)
    ],
    reason: Annotated[
        str, typer.Option("--reason", help="Why: printed on the credit note.", show_default=False)
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Also copy the files into this directory.")
    ] = None,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issue a credit note against an invoice (numbered from the same sequence): an issued invoice is never
    changed, a correction is a credit note. At most what is still outstanding on the invoice."""
    from hubfleet.costs.invoices import credit_note, parse_amount
    from hubfleet.deploy.audit import deploy_actor
    from hubfleet.store import open_store

    value = parse_amount(amount)
    fleet_dir = resolve_fleet_dir(fleet)
    config = load_or_explain(fleet_dir)
    state = resolve_state_dir(fleet_dir, state_dir)
    with open_store(state) as store:
        record, files = credit_note(
            store,
            config,
            number,
            value,
            reason,
            state_dir=state,
            out=out,
            actor=deploy_actor(fleet_dir, "hubfleet invoices credit"),
        )
    if as_json:
        typer.echo(json.dumps({**record.summary(), "files": [str(p) for p in files]}, indent=2))
        return
    console.print(
        f"issued credit note {record.number} on {number}: {record.total} {record.currency}",
        markup=False,
        highlight=False,
    )
    console.print(f"  {files[0].with_suffix('.{pdf,csv,json}')}", markup=False, highlight=False)


@invoices_app.command("list")
@friendly_errors
def list_(
    community: Annotated[str | None, typer.Option("--community", help="Only this community's.")] = None,
    month: Annotated[str | None, typer.Option("--month", help="Only this month's (YYYY-MM).")] = None,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issued invoices and credit notes, with what is outstanding on each invoice."""
    from rich.table import Table

    from hubfleet.store import open_store
    from hubfleet.store.invoices import list_invoices

    if month is not None and not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        raise UserError(f"--month '{month}' is not a month; write YYYY-MM, for example 2026-11")
    fleet_dir = resolve_fleet_dir(fleet)
    with open_store(resolve_state_dir(fleet_dir, state_dir)) as store:
        records = list_invoices(store, community=community, month=month)
    credited: dict[str, Decimal] = {}
    for record in records:
        if record.refers_to:
            credited[record.refers_to] = credited.get(record.refers_to, Decimal(0)) - record.total
    rows = []
    for record in records:
        row = record.summary()
        if record.kind == "invoice":
            row["outstanding"] = str(record.total - credited.get(record.number, Decimal(0)))
        rows.append(row)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        if community or month:
            console.print("no invoice or credit note matches", markup=False)
        else:
            console.print("no invoices yet: hubfleet invoices generate --month YYYY-MM", markup=False)
        return
    table = Table(box=None, pad_edge=False)
    for column, justify in [
        ("number", "left"),
        ("kind", "left"),
        ("community", "left"),
        ("month", "left"),
        ("issued", "left"),
        ("due", "left"),
        ("total", "right"),
        ("outstanding", "right"),
        ("refers to", "left"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        outstanding = row.get("outstanding")
        table.add_row(
            row["number"],
            row["kind"].replace("_", " "),
            row["community"],
            row["month"],
            row["issued_on"],
            row["due_on"],
            f"{row['total']} {row['currency']}",
            f"{outstanding} {row['currency']}" if outstanding is not None else "",
            row["refers_to"] or "",
        )
    console.print(table)


@invoices_app.command("show")
@friendly_errors
def show(
    number: Annotated[str, typer.Argument(help="The invoice's or credit note's number.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write its PDF, CSV and JSON into this directory (again).")
    ] = None,
    fleet: FleetOption = None,
    state_dir: StateDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """One invoice or credit note: its lines and totals (from the store, the truth); missing files are
    written again, identical to the first time."""
    from hubfleet.costs.invoices import ensure_files, write_files
    from hubfleet.store import open_store
    from hubfleet.store.invoices import get_invoice, list_invoices

    fleet_dir = resolve_fleet_dir(fleet)
    state = resolve_state_dir(fleet_dir, state_dir)
    with open_store(state) as store:
        record = get_invoice(store, number)
        if record is None:
            from hubfleet.suggest import suggestion

            known = [r.number for r in list_invoices(store)]
            raise UserError(
                f"no invoice numbered '{number}'; {suggestion(number, known, 'invoices', 'none yet')}"
            )
    files = ensure_files(record, state) if out is None else write_files(record.document, state, out)
    if as_json:
        typer.echo(json.dumps(record.document, indent=2, sort_keys=True))
        return
    _print_document(record.document)
    for path in files:
        console.print(f"wrote {path}", markup=False, highlight=False)


def _print_document(doc: dict[str, Any]) -> None:
    from hubfleet.costs.invoice_pdf import money, quantity, unit_price

    cur = doc["currency"]
    title = "Credit note" if doc["kind"] == "credit_note" else "Invoice"
    lines = [
        f"{title} {doc['number']}  {doc['community']} {doc['month']}  "
        f"issued {doc['issued_on']}  due {doc['due_on']}",
        f"to: {doc['bill_to']['name']}"
        + (f"  PO {doc['purchase_order']}" if doc.get("purchase_order") else ""),
    ]
    if doc.get("refers_to"):
        lines.append(f"refers to {doc['refers_to']}")
    lines.append("")
    for line in doc["lines"]:
        lines.append(
            f"  {line['description'][:52]:<52} {quantity(line['quantity']):>10} {unit_price(line):>10} "
            f"{money(line['amount']):>12} {cur}"
        )
    lines += [
        "",
        f"  {'Subtotal':<74} {money(doc['subtotal']):>12} {cur}",
        f"  {'Total':<74} {money(doc['total']):>12} {cur}",
    ]
    lines += [""] + [f"  {note}" for note in doc.get("notes", [])]
    console.print("\n".join(lines), markup=False, highlight=False)

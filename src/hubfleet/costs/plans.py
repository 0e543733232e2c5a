"""A price plan's maths: what one community owes for one month, as invoice lines. Pure: no store, no files.

Rounding, documented once and applied everywhere: each line is rounded to the cent (half to even, as
money.cents does) when it is made, and every sum is a sum of rounded lines, so the printed lines always add
up to the printed totals. Percentages (markup, discount, tax) are taken of already rounded lines.
Order: fixed fee, MAU fee per tier, pass-through per hub, markup, discount, credits -> subtotal; tax ->
total. Credits never take the subtotal below zero (what is left of a credit is noted, not carried).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from hubfleet.config.models_costs import MauTier, PricePlan
from hubfleet.costs.money import cents

HUNDRED = Decimal(100)
PERIOD_MONTHS = {"month": 1, "quarter": 3, "year": 12}


@dataclass(frozen=True)
class Line:
    """One invoice line: quantity × unit_price = amount (rounded to the cent), in the plan's currency."""

    kind: str
    """fixed_fee, mau, pass_through, markup, discount, credit, tax (credit notes: credit_note)."""
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal
    hub: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "description": self.description,
            "hub": self.hub,
            "quantity": str(self.quantity),
            "unit": self.unit,
            "unit_price": str(self.unit_price),
            "amount": str(self.amount),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Line:
        return cls(
            kind=data["kind"],
            description=data["description"],
            quantity=Decimal(data["quantity"]),
            unit=data["unit"],
            unit_price=Decimal(data["unit_price"]),
            amount=Decimal(data["amount"]),
            hub=data.get("hub", ""),
        )


@dataclass(frozen=True)
class Priced:
    """A month's lines and totals. `subtotal` is every line but tax; `total` includes tax."""

    lines: list[Line]
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TierUse:
    first: int
    last: int | None
    people: int
    unit_price: Decimal


def tier_use(tiers: list[MauTier], people: int) -> list[TierUse]:
    """How many of `people` fall into each graduated tier (first person is number 1); empty tiers too."""
    used, start, left = [], 1, max(people, 0)
    for tier in tiers:
        size = left if tier.up_to is None else max(min(left, tier.up_to - start + 1), 0)
        used.append(TierUse(start, tier.up_to, size, tier.unit_price))
        left -= size
        if tier.up_to is not None:
            start = tier.up_to + 1
    return used


def mau_fee(tiers: list[MauTier], people: int) -> Decimal:
    return sum((cents(t.people * t.unit_price) for t in tier_use(tiers, people)), Decimal(0))


def fixed_fee_due(plan: PricePlan, month: str) -> bool:
    """The fixed fee is charged on the invoice of its period's first month (January, April, July and
    October for quarters; January for years)."""
    number = int(month[5:7])
    return (number - 1) % PERIOD_MONTHS[plan.period] == 0


def _percent(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return f"{text} %"


def _tier_text(use: TierUse) -> str:
    if use.last is None:
        return f"Active people, tier from {use.first:,}"
    return f"Active people, tier {use.first:,}-{use.last:,}"


def price_month(
    plan: PricePlan,
    month: str,
    *,
    people: int,
    pass_through: Mapping[str, Decimal],
    source: Mapping[str, str] | None = None,
) -> Priced:
    """The lines of `month`'s invoice under `plan`: `people` monthly active persons; `pass_through` the
    cloud costs per hub, already in the plan's currency (unrounded: each hub's line is rounded here);
    `source` what a hub's converted costs were in their own currency (shown in its line)."""
    cur = plan.currency
    lines: list[Line] = []
    notes: list[str] = []
    if plan.fixed_fee and fixed_fee_due(plan, month):
        what = {"month": "monthly", "quarter": "quarterly", "year": "yearly"}[plan.period]
        lines.append(
            Line(
                "fixed_fee",
                f"Service fee ({what})",
                Decimal(1),
                plan.period,
                plan.fixed_fee,
                cents(plan.fixed_fee),
            )
        )
    for use in tier_use(plan.mau_tiers, people):
        if use.people:
            lines.append(
                Line(
                    "mau",
                    _tier_text(use),
                    Decimal(use.people),
                    "person",
                    use.unit_price,
                    cents(use.people * use.unit_price),
                )
            )
    service = sum((line.amount for line in lines), Decimal(0))
    passed = Decimal(0)
    for hub in sorted(pass_through):
        amount = cents(pass_through[hub])
        was = f" ({source[hub]})" if source and hub in source else ""
        text = f"Cloud costs, hub {hub}{was}"
        lines.append(Line("pass_through", text, Decimal(1), "month", amount, amount, hub))
        passed += amount
    if plan.markup_percent and passed:
        lines.append(
            Line(
                "markup",
                f"Markup on cloud costs ({_percent(plan.markup_percent)})",
                passed,
                cur,
                plan.markup_percent / HUNDRED,
                cents(passed * plan.markup_percent / HUNDRED),
            )
        )
    if plan.discount_percent and service:
        lines.append(
            Line(
                "discount",
                f"Discount on service fees ({_percent(plan.discount_percent)})",
                service,
                cur,
                -plan.discount_percent / HUNDRED,
                -cents(service * plan.discount_percent / HUNDRED),
            )
        )
    due = sum((line.amount for line in lines), Decimal(0))
    for credit in plan.credits:
        if credit.month != month:
            continue
        amount = min(cents(credit.amount), max(due, Decimal(0)))
        if amount < cents(credit.amount):
            notes.append(
                f"Credit '{credit.reason}': {cents(credit.amount) - amount} {cur} of "
                f"{cents(credit.amount)} {cur} left unused (more than was due)."
            )
        lines.append(Line("credit", f"Credit: {credit.reason}", Decimal(1), "credit", -amount, -amount))
        due -= amount
    subtotal = sum((line.amount for line in lines), Decimal(0))
    tax = Decimal(0)
    if plan.tax is not None:
        tax = cents(subtotal * plan.tax.percent / HUNDRED)
        lines.append(
            Line(
                "tax",
                f"{plan.tax.name} {_percent(plan.tax.percent)}",
                subtotal,
                cur,
                plan.tax.percent / HUNDRED,
                tax,
            )
        )
    return Priced(lines, subtotal, tax, subtotal + tax, notes)

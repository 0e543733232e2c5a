"""Money: where each cluster's costs come from, how they are split, budgets, price plans and invoices.

A cluster's `costs:` says how billing-export rows find it (tag keys, claimed billing accounts) or, for a
local or on-premise cluster that gets no bill, the price sheet that turns its usage into cost. fleet.yaml
`costs:` holds the fleet's currency, exchange rates, price plans and invoicing details; a community's
`billing:` names its plan and budget. Amounts are decimals in the currency named beside them, never floats.
See docs/costs.md.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from hubfleet.config.fields import Email, Name, Strict

Currency = Annotated[
    str,
    Field(
        pattern=r"^[A-Z]{3}$",
        description="An ISO 4217 currency code in capitals (USD, EUR, GBP, ...).",
    ),
]
Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=6)]
"""A non-negative amount with at most 6 decimal places (cloud prices go below a cent)."""


def _month(value: str) -> str:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", value):
        raise ValueError(f"'{value}' is not a month; write YYYY-MM, for example 2026-11")
    return value


Month = Annotated[str, AfterValidator(_month), Field(description="A calendar month, YYYY-MM.")]

DEFAULT_HUB_TAG_KEYS = ["hubfleet-hub", "2i2c:hub-name"]
DEFAULT_CLUSTER_TAG_KEYS = ["hubfleet-cluster", "2i2c.org/cluster-name"]
DEFAULT_BUDGET_ALERTS = [Decimal("0.5"), Decimal("0.9"), Decimal("1")]


# --------------------------------------------------------------------------- clusters


class CostTagKeys(Strict):
    """Which resource tags (labels on GCP) name a hub or a cluster in a billing export. The defaults are
    legal on every cloud (GCP labels allow lowercase letters, digits, `_` and `-`; Azure forbids `/`); the
    modelled service's AWS keys are accepted as well."""

    hub: list[str] = Field(
        default_factory=lambda: list(DEFAULT_HUB_TAG_KEYS),
        min_length=1,
        description="Tag keys whose value is a hub's name: that row's cost is the hub's own.",
    )
    cluster: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CLUSTER_TAG_KEYS),
        min_length=1,
        description="Tag keys whose value is this cluster's name (or `tag_value`): shared cost.",
    )


class PriceSheet(Strict):
    """What a cluster with no cloud bill (local, on-premise) charges for what its hubs use."""

    currency: Currency = "USD"
    cpu_hour: Money = Field(default=Decimal(0), description="Per CPU core-hour a server used or requested.")
    memory_gib_hour: Money = Field(default=Decimal(0), description="Per GiB-hour of memory.")
    storage_gib_month: Money = Field(default=Decimal(0), description="Per GiB-month of home storage.")
    monthly_fixed: Money = Field(
        default=Decimal(0),
        description="A fixed amount each month (the machine, power, care): shared by the cluster's hubs.",
    )


class ClusterCapacity(Strict):
    """What the cluster's machines offer, for the idle-capacity line (unset: shared cost is split by use)."""

    cpu: float = Field(gt=0, description="CPU cores, all nodes together.")
    memory_gib: float = Field(gt=0, description="Memory in GiB, all nodes together.")


class ClusterCosts(Strict):
    """How a cluster's costs are found in billing exports and split across its hubs."""

    tag_keys: CostTagKeys = Field(default_factory=CostTagKeys)
    tag_value: str | None = Field(
        default=None,
        min_length=1,
        description="The cluster's name in its resources' tags, when it is not the cluster's hubfleet name.",
    )
    billing_accounts: list[str] = Field(
        default_factory=list,
        description="Billing accounts whose every row is this cluster's (a project or account of its own).",
    )
    sub_accounts: list[str] = Field(
        default_factory=list,
        description="Sub-accounts (GCP project, AWS linked account, Azure subscription) all the cluster's.",
    )
    price_sheet: PriceSheet | None = Field(
        default=None, description="For a cluster with no bill: the prices that turn its usage into cost."
    )
    capacity: ClusterCapacity | None = Field(
        default=None, description="The cluster's size, for the idle-capacity line."
    )
    idle: Literal["proportional", "even", "operator"] = Field(
        default="proportional",
        description="Who carries idle capacity: the hubs in proportion to use, the hubs evenly, or the "
        "operator (kept as its own line, not passed on).",
    )


# --------------------------------------------------------------------------- fleet.yaml


class ExchangeRate(Strict):
    """1 `source` = `rate` `target`, for one month, or (without `month`) any month without its own rate."""

    source: Currency
    target: Currency
    rate: Decimal = Field(gt=0, max_digits=18, decimal_places=10)
    month: Month | None = None


class MauTier(Strict):
    """The price of each monthly active person from the previous tier's `up_to` (exclusive) up to this one."""

    up_to: int | None = Field(
        default=None, ge=1, description="The last person of this tier; unset: no limit."
    )
    unit_price: Money


class Credit(Strict):
    """An amount taken off one month's invoice (a goodwill credit, a prepaid sum)."""

    month: Month
    amount: Money
    reason: str = Field(min_length=1)


class Tax(Strict):
    name: str = Field(default="VAT", min_length=1)
    percent: Decimal = Field(ge=0, le=100, max_digits=6, decimal_places=3)


class PricePlan(Strict):
    """What a community pays: a fixed fee, a fee per monthly active person, its cloud costs at a markup."""

    currency: Currency = "USD"
    fixed_fee: Money = Field(default=Decimal(0), description="Charged once per `period`.")
    period: Literal["month", "quarter", "year"] = Field(
        default="month",
        description="How often the fixed fee is charged: on the invoice of the period's first month.",
    )
    mau_tiers: list[MauTier] = Field(
        default_factory=list,
        description="Graduated price per monthly active person; the last tier has no `up_to`.",
    )
    mau_stages: Literal["prod", "all"] = Field(
        default="prod", description="Whose users count for the MAU fee: prod hubs only, or staging hubs too."
    )
    markup_percent: Decimal = Field(
        default=Decimal(0), ge=0, le=1000, description="Added to the cloud costs passed through."
    )
    discount_percent: Decimal = Field(
        default=Decimal(0), ge=0, le=100, description="Taken off the service fees (fixed and MAU)."
    )
    credits: list[Credit] = Field(default_factory=list)
    tax: Tax | None = None

    @field_validator("mau_tiers")
    @classmethod
    def _tiers_ascend(cls, tiers: list[MauTier]) -> list[MauTier]:
        for index, tier in enumerate(tiers):
            last = index == len(tiers) - 1
            if tier.up_to is None and not last:
                raise ValueError(f"tier {index + 1} has no `up_to` but is not the last tier")
            if index and tier.up_to is not None and tier.up_to <= (tiers[index - 1].up_to or 0):
                raise ValueError(f"tier {index + 1}: `up_to` must be larger than the tier before's")
        return tiers


class Invoicing(Strict):
    """Who issues the invoices, and how they are numbered."""

    issuer: str = Field(default="", description="The service's legal name, at the top of every invoice.")
    address: list[str] = Field(default_factory=list, description="The issuer's address, one line each.")
    email: Email | None = None
    tax_id: str = ""
    number_prefix: str = Field(
        default="INV-",
        pattern=r"^[A-Za-z0-9-]{0,20}$",
        description="Invoice numbers are PREFIX + year + sequence.",
    )
    payment_terms_days: int = Field(default=30, ge=0, le=365)
    payment_details: list[str] = Field(
        default_factory=list,
        description="How to pay (bank, IBAN, BIC, reference), one line each: printed on every invoice.",
    )


class DefaultBudget(Strict):
    """The budget of a community that sets none: the average of its last months' costs plus a margin."""

    months: int = Field(default=3, ge=1, le=24)
    margin_percent: Decimal = Field(default=Decimal(20), ge=0, le=1000)


class FleetCosts(Strict):
    currency: Currency = Field(default="USD", description="The currency fleet-wide totals are shown in.")
    exchange_rates: list[ExchangeRate] = Field(
        default_factory=list, description="Rates for bills and plans in another currency."
    )
    plans: dict[Name, PricePlan] = Field(
        default_factory=dict, description="Price plans by name; a community's `billing.plan` names one."
    )
    invoicing: Invoicing = Field(default_factory=Invoicing)
    budget_alerts: list[Decimal] = Field(
        default_factory=lambda: list(DEFAULT_BUDGET_ALERTS),
        description="Fractions of a budget that raise an alert when a month's cost reaches them.",
    )
    default_budget: DefaultBudget | None = Field(
        default_factory=DefaultBudget,
        description="The budget of communities without one; null: no budget unless set.",
    )
    anomaly_factor: float = Field(
        default=3.0,
        gt=1,
        description="A hub's daily cost above this many times its median of the last 14 days is an anomaly.",
    )
    anomaly_min_amount: Money = Field(
        default=Decimal(5), description="...and at least this much above it (in the fleet currency)."
    )

    @field_validator("budget_alerts")
    @classmethod
    def _fractions(cls, values: list[Decimal]) -> list[Decimal]:
        if any(v <= 0 or v > 10 for v in values):
            raise ValueError("budget alert fractions are between 0 and 10 (0.5 is half the budget)")
        return sorted(set(values))

    @model_validator(mode="after")
    def _one_rate_each(self) -> FleetCosts:
        seen: set[tuple[str, str, str | None]] = set()
        for rate in self.exchange_rates:
            key = (rate.source, rate.target, rate.month)
            if key in seen:
                raise ValueError(
                    f"exchange rate {rate.source}->{rate.target} for {rate.month or 'any month'} twice"
                )
            seen.add(key)
        return self


# --------------------------------------------------------------------------- communities


class Budget(Strict):
    """A community's monthly budget, and optionally its hubs'."""

    monthly: Money
    currency: Currency | None = Field(
        default=None, description="Unset: the plan's, else the fleet's currency."
    )
    hubs: dict[Name, Money] = Field(default_factory=dict, description="Budgets of single hubs.")


class BillingContact(Strict):
    name: str = Field(min_length=1)
    email: Email | None = None
    address: list[str] = Field(default_factory=list)


class CommunityBilling(Strict):
    """What the community pays and who receives its invoices."""

    plan: Name | None = Field(
        default=None, description="A plan of fleet.yaml `costs.plans`; unset: no invoice."
    )
    budget: Budget | None = None
    bill_to: BillingContact | None = Field(default=None, description="The invoice's addressee.")
    purchase_order: str = Field(default="", description="Printed on every invoice when set.")

"""Exact money: amounts are Decimals in memory and integer micros (millionths) in the store; a split of an
amount over shares always adds back to the amount, to the cent (largest remainder)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_EVEN, Decimal

from hubfleet.config.models_costs import ExchangeRate

MICROS = Decimal(1_000_000)
CENT = Decimal("0.01")


class MissingRate(ValueError):
    """No exchange rate between two currencies for a month: the message names the rate to add."""


def to_micros(amount: Decimal) -> int:
    return int((amount * MICROS).to_integral_value(ROUND_HALF_EVEN))


def from_micros(micros: int) -> Decimal:
    return Decimal(micros) / MICROS


def cents(amount: Decimal) -> Decimal:
    """Rounded to the cent, half to even (banker's rounding, as billing systems do)."""
    return amount.quantize(CENT, ROUND_HALF_EVEN)


def split(total: int, weights: Mapping[str, float | int | Decimal], unit: int = 1) -> dict[str, int]:
    """`total` (integer units: micros or cents) over `weights`, in multiples of `unit`: the parts add up
    to `total` exactly (largest remainder; ties go to the first key in sorted order). Zero or no weights:
    even shares. The remainder of `total` that is not a multiple of `unit` goes to the largest part."""
    keys = sorted(weights)
    if not keys:
        raise ValueError("nothing to split over")
    raw = {key: Decimal(str(weights[key])) for key in keys}
    if any(value < 0 for value in raw.values()):
        raise ValueError("a weight is negative")
    weight_sum = sum(raw.values())
    if weight_sum == 0:
        raw, weight_sum = dict.fromkeys(keys, Decimal(1)), Decimal(len(keys))
    sign = -1 if total < 0 else 1
    units, odd = divmod(abs(total), unit)
    exact = {key: Decimal(units) * raw[key] / weight_sum for key in keys}
    parts = {key: int(value) for key, value in exact.items()}
    left = units - sum(parts.values())
    for key in sorted(keys, key=lambda k: (-(exact[k] - parts[k]), k))[:left]:
        parts[key] += 1
    result = {key: sign * parts[key] * unit for key in keys}
    if odd:
        largest = max(keys, key=lambda k: (abs(result[k]), k))
        result[largest] += sign * odd
    return result


def rate_for(rates: Sequence[ExchangeRate], source: str, target: str, month: str) -> Decimal:
    """1 `source` in `target` for `month`: the month's own rate, else the rate without a month; the inverse of
    a target->source rate when only that is given."""
    if source == target:
        return Decimal(1)
    for wanted in (month, None):
        for rate in rates:
            if rate.month == wanted and (rate.source, rate.target) == (source, target):
                return rate.rate
        for rate in rates:
            if rate.month == wanted and (rate.source, rate.target) == (target, source):
                return Decimal(1) / rate.rate
    raise MissingRate(
        f"no exchange rate from {source} to {target} for {month}: add one to fleet.yaml "
        f"`costs.exchange_rates` (- {{source: {source}, target: {target}, rate: ..., month: '{month}'}})"
    )


def convert(amount: Decimal, source: str, target: str, month: str, rates: Sequence[ExchangeRate]) -> Decimal:
    return amount * rate_for(rates, source, target, month)

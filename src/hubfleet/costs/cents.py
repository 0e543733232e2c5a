"""Cents that add up: amounts are exact in micros; shown to people they are cents, and a largest-remainder
rounding makes the parts' cents add up to the whole's (which a cent-by-cent rounding of each would not)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TypeVar

MICROS_PER_CENT = 10_000

K = TypeVar("K", bound=Hashable)


def micros_to_cents(micros: int) -> int:
    """Rounded half to even, as money.cents does."""
    return int((Decimal(micros) / MICROS_PER_CENT).to_integral_value(ROUND_HALF_EVEN))


def round_cents(parts: Mapping[K, int], target: int) -> dict[K, int]:
    """Micros amounts (of any sign) to cents that add up to `target` cents: each is floored, and the
    difference goes a cent at a time to the largest remainders (taken back from the smallest when the
    target is below the floors' sum; ties by key)."""
    floors = {key: value // MICROS_PER_CENT for key, value in parts.items()}
    left = target - sum(floors.values())
    if not floors:
        if left:
            raise ValueError("cents to spread over nothing")
        return {}
    order = sorted(floors, key=lambda k: (-(parts[k] - floors[k] * MICROS_PER_CENT), str(k)))
    step = 1
    if left < 0:
        order.reverse()
        step = -1
    for index in range(abs(left)):
        floors[order[index % len(order)]] += step
    return floors


def as_amount(cents: int) -> Decimal:
    """Integer cents as a Decimal of the currency unit (2 places)."""
    return Decimal(cents).scaleb(-2)

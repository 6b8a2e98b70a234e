"""What a purchase earns. Integer arithmetic, rounded down: the ledger never credits a
fraction of a point or of a cent that the rules did not grant."""

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class EarnRates:
    points: int
    """Points per `per_amount`."""
    per_amount: int
    """Minor units of spend."""
    cashback_bps: int


@dataclass(frozen=True)
class Earned:
    points: int
    cashback: int


def earn_for_purchase(amount: int, rates: EarnRates) -> Earned:
    return Earned(
        points=amount * rates.points // rates.per_amount,
        cashback=amount * rates.cashback_bps // 10_000,
    )


@dataclass(frozen=True)
class Exclusions:
    categories: frozenset[str] = frozenset()
    skus: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Line:
    sku: str
    category: str | None
    amount: int


def eligible_amount(
    amount: int, lines: Sequence[Line] | None, redeemed_amount: int, excluded: Exclusions
) -> int:
    """What of a purchase earns: its lines outside the partner's exclusions (all of it when
    the till sends no lines), less the part paid with points or cashback, in proportion (the
    points paid for earning and non-earning goods alike). Rounded down."""
    if lines is None:
        earning = amount
    else:
        earning = sum(
            line.amount
            for line in lines
            if line.sku not in excluded.skus and line.category not in excluded.categories
        )
    return earning * (amount - redeemed_amount) // amount

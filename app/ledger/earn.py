"""What a purchase earns. Integer arithmetic, rounded down: the ledger never credits a
fraction of a point or of a cent that the rules did not grant."""

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

"""Tiers, as pure functions: which tier a qualifying spend reaches, what a tier adds to a
purchase, and what is left to the next one.

A card's qualifying spend is the eligible amount of its purchases (app/rules/earn.py), less
returns, over the ladder's window of calendar months (this one included). A purchase that
crosses a threshold moves the card up at once: the purchase itself earns at the tier the card
had, the next one at the new tier. Moving down waits for the tier review
(`loyalty-ledger tiers`), so a card is not demoted mid-month by a return."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Tier:
    code: str
    name: str
    threshold: int
    """Qualifying spend (minor units) from which a card has this tier."""
    points_bonus_pct: int
    """Extra points, in percent of what the partner's rule granted (50: half as many again)."""
    cashback_bonus_bps: int
    """Extra cashback, in basis points of the eligible amount."""


@dataclass(frozen=True)
class Ladder:
    version: int
    window_months: int
    tiers: tuple[Tier, ...]
    """Lowest first; the lowest has threshold 0."""

    @classmethod
    def from_stored(cls, version: int, window_months: int, tiers: Sequence[Any]) -> "Ladder":
        return cls(version, window_months, tuple(Tier(**t) for t in tiers))

    def reached(self, spend: int) -> Tier:
        """The highest tier whose threshold `spend` reaches."""
        reached = self.tiers[0]
        for tier in self.tiers:
            if spend >= tier.threshold:
                reached = tier
        return reached

    def rank(self, code: str | None) -> int:
        """Position of a tier in the ladder; -1 for none, or for a code the ladder dropped."""
        for index, tier in enumerate(self.tiers):
            if tier.code == code:
                return index
        return -1

    def current(self, code: str | None, spend: int) -> Tier:
        """The card's tier: the one it holds, unless its spend reaches a higher one (a card
        whose tier the ladder no longer has gets the tier its spend reaches)."""
        reached = self.reached(spend)
        held = self.rank(code)
        return self.tiers[held] if held > self.tiers.index(reached) else reached

    def above(self, tier: Tier) -> Tier | None:
        index = self.tiers.index(tier)
        return self.tiers[index + 1] if index + 1 < len(self.tiers) else None


@dataclass(frozen=True)
class Bonus:
    points: int
    cashback: int


def tier_bonus(tier: Tier, base_points: int, eligible: int) -> Bonus:
    return Bonus(
        points=base_points * tier.points_bonus_pct // 100,
        cashback=eligible * tier.cashback_bonus_bps // 10_000,
    )

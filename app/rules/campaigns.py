"""Campaigns, as pure functions: which active campaigns a purchase qualifies for and what each
adds, within what is left of its budget.

- `multiplier`: extra points, in percent of what the partner's rule granted (100: double
  points), optionally only on basket lines in some categories;
- `first_purchase`: a fixed number of points on a card's first purchase;
- `win_back`: a fixed number of points on the next purchase of a card that bought nothing
  for `quiet_days` (a card that never bought anything is not won back: that is a first
  purchase);
- `birthday`: a fixed number of points on a personalized card's first purchase in the
  `window_days` from the customer's birthday, once a year (29 February is 28 February in
  other years);
- `stamps`: a stamp card at a partner: each purchase with at least `min_amount` eligible
  earns a stamp, and every `stamps_needed`-th stamp earns a fixed number of points (the card's
  stamps are state: the engine keeps them, `stamp` says what one purchase does to them).
Either may be limited to a partner and to some tiers, and capped by a budget of points: the
purchase that reaches the cap gets what is left, and the campaign stops applying."""

import calendar
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from app.rules.earn import EarnRates, Exclusions, Line, earn_for_purchase, eligible_amount


@dataclass(frozen=True)
class Campaign:
    id: uuid.UUID
    code: str
    version: int
    kind: str
    points_pct: int
    bonus_points: int
    quiet_days: int | None
    stamps_needed: int | None
    min_amount: int
    window_days: int | None
    partner_id: uuid.UUID | None
    categories: frozenset[str] | None
    tiers: frozenset[str] | None
    funded_by: str
    budget_points: int | None
    referrer_points: int = 0

    @classmethod
    def from_stored(cls, row: dict[str, Any]) -> "Campaign":
        categories, tiers = row["categories"], row["tiers"]
        return cls(
            id=uuid.UUID(str(row["id"])),
            code=row["code"],
            version=row["version"],
            kind=row["kind"],
            points_pct=row["points_pct"],
            bonus_points=row["bonus_points"],
            quiet_days=row["quiet_days"],
            stamps_needed=row["stamps_needed"],
            min_amount=row["min_amount"],
            window_days=row["window_days"],
            partner_id=uuid.UUID(row["partner_id"]) if row["partner_id"] else None,
            categories=frozenset(categories) if categories is not None else None,
            tiers=frozenset(tiers) if tiers is not None else None,
            funded_by=row["funded_by"],
            budget_points=row["budget_points"],
            referrer_points=row.get("referrer_points", 0),
        )


@dataclass(frozen=True)
class Purchase:
    """What the campaigns look at."""

    partner_id: uuid.UUID | None
    tier: str | None
    last_purchase_at: datetime | None
    """The card's latest purchase before this one (None: this is its first)."""
    at: datetime
    """When this purchase happens."""
    local_date: date
    """Its date in the program's time zone."""
    birth_date: date | None
    last_birthday_bonus: date | None
    """When (program's date) the card last got a birthday bonus."""
    base_points: int
    amount: int
    lines: Sequence[Line] | None
    redeemed_amount: int
    excluded: Exclusions
    rates: EarnRates


def in_scope(campaign: Campaign, purchase: Purchase) -> bool:
    if campaign.partner_id is not None and campaign.partner_id != purchase.partner_id:
        return False
    return campaign.tiers is None or purchase.tier in campaign.tiers


def stamp(campaign: Campaign, purchase: Purchase, eligible: int, stamps: int) -> tuple[int, int]:
    """A stamp card: (the card's stamps after this purchase, the points it earns). A purchase
    out of scope or under `min_amount` leaves the stamps as they are."""
    assert campaign.stamps_needed is not None
    if not in_scope(campaign, purchase) or eligible < campaign.min_amount:
        return stamps, 0
    if stamps + 1 >= campaign.stamps_needed:
        return 0, campaign.bonus_points
    return stamps + 1, 0


def bonus(campaign: Campaign, purchase: Purchase) -> int:
    """The points `campaign` adds to `purchase`, before its budget (not for stamp cards)."""
    if not in_scope(campaign, purchase):
        return 0
    if campaign.kind == "first_purchase":
        return campaign.bonus_points if purchase.last_purchase_at is None else 0
    if campaign.kind == "birthday":
        assert campaign.window_days is not None
        birthday = current_birthday(purchase.birth_date, purchase.local_date, campaign.window_days)
        if birthday is None:
            return 0
        last = purchase.last_birthday_bonus
        return campaign.bonus_points if last is None or last < birthday else 0
    if campaign.kind == "win_back":
        assert campaign.quiet_days is not None
        last = purchase.last_purchase_at
        quiet = last is not None and purchase.at - last >= timedelta(days=campaign.quiet_days)
        return campaign.bonus_points if quiet else 0
    base = purchase.base_points
    if campaign.categories is not None:
        if purchase.lines is None:
            return 0
        lines = [line for line in purchase.lines if line.category in campaign.categories]
        # The eligible part of the lines in scope, earned at the partner's rate (the same
        # rounding as the whole purchase: it never exceeds the base points).
        redeemed, excluded = purchase.redeemed_amount, purchase.excluded
        scoped = eligible_amount(purchase.amount, lines, redeemed, excluded)
        base = earn_for_purchase(scoped, purchase.rates).points
    return base * campaign.points_pct // 100


def birthday_in(birth_date: date, year: int) -> date:
    """The birthday in `year` (29 February falls on 28 February outside leap years)."""
    if (birth_date.month, birth_date.day) == (2, 29) and not calendar.isleap(year):
        return date(year, 2, 28)
    return birth_date.replace(year=year)


def current_birthday(birth_date: date | None, today: date, window_days: int) -> date | None:
    """The birthday whose window `today` is in, if any (the window may cross New Year)."""
    if birth_date is None:
        return None
    for year in (today.year, today.year - 1):
        birthday = birthday_in(birth_date, year)
        if birthday <= today <= birthday + timedelta(days=window_days):
            return birthday
    return None


def capped(campaign: Campaign, points: int, spent: int) -> int:
    """What a budget still allows of `points`."""
    if campaign.budget_points is None:
        return points
    return max(0, min(points, campaign.budget_points - spent))

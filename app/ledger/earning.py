"""What a group's purchases earn beyond the partner's rule, in request order: the card's tier
bonus, the campaigns, and what each purchase does to the card's standing (qualifying spend, a
move up the ladder, its first purchase) and to the campaigns' budgets.

The posting engine (engine.py) loads a `Standing` once per group, after the cards' accounts
are locked, asks it to `earn` each purchase before the balance check, and to `commit` the ones
it posts. Reads it needs beyond the context statement, only when they matter:
  - the cards' tier, spend and latest purchase (a program with a ladder, or a first-purchase
    or win-back campaign);
  - the budgeted campaigns' spent points, locked `FOR UPDATE` after the cards (the row lock
    is what keeps a budget from being overspent by concurrent groups; it serializes the
    purchases that campaign applies to, and only those).
"""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import orjson

from app.ledger import hot_repository as repository
from app.ledger.rules import Plan, add_campaign_bonus, add_tier_bonus
from app.programs.service import ProgramContext
from app.rules.campaigns import Campaign, Purchase, bonus, capped
from app.rules.tiers import Ladder, Tier


@dataclass
class _Card:
    tier: str | None
    spend: int
    last_purchase_at: datetime | None


@dataclass
class Earned:
    """What `Standing.earn` added to a purchase, to commit if it is posted."""

    tier: Tier | None
    grants: dict[uuid.UUID, int]


@dataclass
class Standing:
    program: ProgramContext
    ladder: Ladder | None
    campaigns: list[Campaign]
    cards: dict[int, _Card]
    spent: dict[uuid.UUID, int]
    """Budgeted campaigns: points granted so far, including this group's."""
    spend: dict[tuple[int, date], int] = field(default_factory=dict)
    """Writes: (card id, first day of the month) -> qualifying spend to add."""
    tiers: dict[int, str] = field(default_factory=dict)
    """Writes: card id -> its new tier."""
    grants: dict[uuid.UUID, int] = field(default_factory=dict)
    """Writes: campaign id -> points this group granted."""

    def earn(self, plan: Plan, at: datetime) -> Earned:
        card = self.cards.get(plan.card_id)
        tier = None
        if self.ladder is not None and card is not None:
            tier = self.ladder.current(card.tier, card.spend)
            add_tier_bonus(plan, self.program, self.ladder, tier)
        grants: dict[uuid.UUID, int] = {}
        if self.campaigns:
            assert plan.applied is not None and plan.basket is not None
            purchase = Purchase(
                partner_id=plan.intent.partner_id,
                tier=tier.code if tier else None,
                # Without a card standing (no campaign needs it), no first or win-back bonus.
                last_purchase_at=card.last_purchase_at if card else at,
                at=at,
                base_points=plan.applied[0]["points"],
                **plan.basket,
            )
            for campaign in self.campaigns:
                points = capped(campaign, bonus(campaign, purchase), self.spent.get(campaign.id, 0))
                if points:
                    add_campaign_bonus(plan, self.program, campaign, points)
                    grants[campaign.id] = points
        return Earned(tier, grants)

    def commit(self, plan: Plan, earned: Earned, occurred_at: datetime) -> None:
        """The purchase is posted: count its spend, move the card up if it crossed a
        threshold (it earned at the tier before), and charge the campaigns' budgets."""
        assert plan.eligible
        utc = occurred_at.astimezone(UTC)
        key = (plan.card_id, date(utc.year, utc.month, 1))
        self.spend[key] = self.spend.get(key, 0) + plan.eligible
        for campaign_id, points in earned.grants.items():
            self.grants[campaign_id] = self.grants.get(campaign_id, 0) + points
            if campaign_id in self.spent:
                self.spent[campaign_id] += points
        card = self.cards.get(plan.card_id)
        if card is None:
            return
        card.last_purchase_at = max(card.last_purchase_at or occurred_at, occurred_at)
        card.spend += plan.eligible
        if self.ladder is None or earned.tier is None:
            return
        after = self.ladder.current(earned.tier.code, card.spend)
        if after.code != card.tier:
            self.tiers[plan.card_id] = after.code
        card.tier = after.code
        plan.tier = {
            "code": after.code,
            "upgraded_from": earned.tier.code if after != earned.tier else None,
        }


async def load(
    conn: asyncpg.Connection,
    program: ProgramContext,
    plans: list[Plan],
    context: dict[int, dict[str, Any]],
) -> Standing | None:
    """The standing of the cards the group's purchases are for (None: no purchase earns)."""
    cards = sorted({p.card_id for p in plans if p.eligible})
    if not cards:
        return None
    stored = context[0]["campaigns"]
    campaigns = [Campaign.from_stored(c) for c in orjson.loads(stored)] if stored else []
    needs_cards = context[0]["ladder_version"] is not None or any(
        c.kind in ("first_purchase", "win_back") for c in campaigns
    )
    ladder, standing = None, {}
    if needs_cards:
        rows = await repository.card_standing(conn, program.id, cards)
        first = rows[0]
        if first["version"] is not None:
            ladder = Ladder.from_stored(
                first["version"], first["window_months"], orjson.loads(first["tiers"])
            )
        standing = {r["card_id"]: _Card(r["tier"], r["spend"], r["last_purchase_at"]) for r in rows}
    budgeted = [c.id for c in campaigns if c.budget_points is not None]
    spent = await repository.lock_campaigns(conn, budgeted) if budgeted else {}
    return Standing(program, ladder, campaigns, standing, spent)

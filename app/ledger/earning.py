"""What a group's purchases earn beyond the partner's rule, in request order: the card's tier
bonus, the campaigns, and what each purchase does to the card's standing (qualifying spend, a
move up the ladder, its first purchase) and to the campaigns' budgets.

The posting engine (engine.py) loads a `Standing` once per group, after the cards' accounts
are locked, asks it to `earn` each purchase before the balance check, and to `commit` the ones
it posts. Reads it needs beyond the context statement, only when they matter:
  - the cards' tier, spend, latest purchase, birth date and latest birthday bonus (a program
    with a ladder, or a first-purchase, win-back or birthday campaign);
  - the budgeted campaigns' spent points, locked `FOR UPDATE` after the cards (the row lock
    is what keeps a budget from being overspent by concurrent groups). Every campaign a group
    grants is also updated (its spent_points) at the group's write, which orders the group
    after an end of the campaign (a group that granted an ended campaign is rerun: engine.py)
    and serializes, from the write to the commit, the groups granting the same campaign;
  - the cards' stamps on stamp-card campaigns (current: they change under the cards' locks).
"""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson

from app.ledger import hot_repository as repository
from app.ledger.rules import Plan, add_campaign_bonus, add_referral_bonus, add_tier_bonus
from app.programs.service import ProgramContext
from app.rules.campaigns import Campaign, Purchase, bonus, capped, in_scope, stamp
from app.rules.tiers import Ladder, Tier


@dataclass
class _Card:
    tier: str | None
    spend: int
    last_purchase_at: datetime | None
    birth_date: date | None = None
    last_birthday_bonus: date | None = None


@dataclass
class Earned:
    """What `Standing.earn` added to a purchase, to commit if it is posted."""

    tier: Tier | None
    grants: dict[uuid.UUID, int]
    stamps: dict[tuple[uuid.UUID, int], int]
    """(campaign id, card id) -> the card's stamps after this purchase"""
    birthday: date | None = None
    """The program's date of a purchase that got a birthday bonus."""


@dataclass
class Standing:
    program: ProgramContext
    ladder: Ladder | None
    campaigns: list[Campaign]
    cards: dict[int, _Card]
    spent: dict[uuid.UUID, int]
    """Budgeted campaigns: points granted so far, including this group's."""
    stamps: dict[tuple[uuid.UUID, int], int] = field(default_factory=dict)
    """Stamp cards: (campaign id, card id) -> stamps so far."""
    window_start: date | None = None
    """The first month the ladder's window counts (a purchase dated before it, by an offline
    till, is spend of a month that no longer qualifies)."""
    spend: dict[tuple[int, date], int] = field(default_factory=dict)
    """Writes: (card id, first day of the month) -> qualifying spend to add."""
    tiers: dict[int, str] = field(default_factory=dict)
    """Writes: card id -> its new tier."""
    grants: dict[uuid.UUID, int] = field(default_factory=dict)
    """Writes: campaign id -> points this group granted."""
    stamped: dict[tuple[uuid.UUID, int], int] = field(default_factory=dict)
    """Writes: (campaign id, card id) -> the card's stamps now."""

    def show_tier(self, plan: Plan) -> None:
        """A purchase of which nothing is eligible earns nothing, but still answers the
        card's tier (in a program with a ladder)."""
        card = self.cards.get(plan.card_id)
        if self.ladder is not None and card is not None:
            tier = self.ladder.current(card.tier, card.spend)
            plan.tier = {"code": tier.code, "upgraded_from": None}

    def earn(self, plan: Plan, at: datetime) -> Earned:
        card = self.cards.get(plan.card_id)
        tier = None
        if self.ladder is not None and card is not None:
            tier = self.ladder.current(card.tier, card.spend)
            add_tier_bonus(plan, self.program, self.ladder, tier)
            plan.tier = {"code": tier.code, "upgraded_from": None}  # `commit` may move it
        grants: dict[uuid.UUID, int] = {}
        stamps: dict[tuple[uuid.UUID, int], int] = {}
        birthday = None
        if self.campaigns:
            assert plan.applied is not None and plan.basket is not None and plan.eligible
            local_date = at.astimezone(ZoneInfo(self.program.timezone)).date()
            purchase = Purchase(
                partner_id=plan.intent.partner_id,
                tier=tier.code if tier else None,
                # Without a card standing (no campaign needs it), no first or win-back bonus.
                last_purchase_at=card.last_purchase_at if card else at,
                at=at,
                local_date=local_date,
                birth_date=card.birth_date if card else None,
                last_birthday_bonus=card.last_birthday_bonus if card else None,
                base_points=plan.applied[0]["points"],
                **plan.basket,
            )
            for campaign in self.campaigns:
                left = capped(campaign, campaign.bonus_points or 1, self.spent.get(campaign.id, 0))
                if not left:
                    continue  # the budget is spent: the campaign stops applying
                if campaign.kind == "referral":
                    referrer = plan.referrer
                    if (
                        referrer is None
                        or not in_scope(campaign, purchase)
                        or purchase.last_purchase_at is not None
                    ):
                        continue
                    wanted = campaign.bonus_points + (
                        campaign.referrer_points if referrer.open else 0
                    )
                    total = capped(campaign, wanted, self.spent.get(campaign.id, 0))
                    to_card = min(campaign.bonus_points, total)
                    add_referral_bonus(plan, self.program, campaign, to_card, total - to_card)
                    grants[campaign.id] = total
                    continue
                if campaign.kind == "stamps":
                    key = (campaign.id, plan.card_id)
                    before = self.stamps.get(key, 0)
                    after, points = stamp(campaign, purchase, plan.eligible, before)
                    if (after, points) == (before, 0):
                        continue
                    stamps[key] = after
                else:
                    points = bonus(campaign, purchase)
                points = capped(campaign, points, self.spent.get(campaign.id, 0))
                if points or campaign.kind == "stamps":  # a stamp shows even without points
                    add_campaign_bonus(plan, self.program, campaign, points)
                    grants[campaign.id] = points
                    if campaign.kind == "birthday":
                        birthday = local_date
        return Earned(tier, grants, stamps, birthday)

    def commit(self, plan: Plan, earned: Earned, occurred_at: datetime) -> None:
        """The purchase is posted: count its spend, move the card up if it crossed a
        threshold (it earned at the tier before), and charge the campaigns' budgets. (Only a
        posted purchase counts: qualifying spend is the eligible amount of posted accruals,
        less returns and reversals.)"""
        assert plan.eligible
        utc = occurred_at.astimezone(UTC)
        key = (plan.card_id, date(utc.year, utc.month, 1))
        self.spend[key] = self.spend.get(key, 0) + plan.eligible
        for campaign_id, points in earned.grants.items():
            self.grants[campaign_id] = self.grants.get(campaign_id, 0) + points
            if campaign_id in self.spent:
                self.spent[campaign_id] += points
        self.stamps.update(earned.stamps)
        self.stamped.update(earned.stamps)
        card = self.cards.get(plan.card_id)
        if card is None:
            return
        card.last_purchase_at = max(card.last_purchase_at or occurred_at, occurred_at)
        if earned.birthday is not None:
            card.last_birthday_bonus = earned.birthday
        if self.window_start is None or key[1] >= self.window_start:
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
    """The standing of the cards the group's purchases are for (None: no purchase)."""
    cards = sorted({p.card_id for p in plans if p.eligible is not None})
    if not cards:
        return None
    stored = context[0]["campaigns"]
    campaigns = [Campaign.from_stored(c) for c in orjson.loads(stored)] if stored else []
    needs_cards = context[0]["ladder_version"] is not None or any(
        c.kind in ("first_purchase", "win_back", "birthday", "referral") for c in campaigns
    )
    ladder, standing = None, {}
    if needs_cards:
        birthdays = [c.code for c in campaigns if c.kind == "birthday"]
        rows = await repository.card_standing(conn, program.id, cards, birthdays)
        first = rows[0]
        if first["version"] is not None:
            ladder = Ladder.from_stored(
                first["version"], first["window_months"], orjson.loads(first["tiers"])
            )
        zone = ZoneInfo(program.timezone)
        standing = {
            r["card_id"]: _Card(
                r["tier"],
                r["spend"],
                r["last_purchase_at"],
                r["birth_date"],
                r["last_birthday_bonus"].astimezone(zone).date()
                if r["last_birthday_bonus"]
                else None,
            )
            for r in rows
        }
    budgeted = [c.id for c in campaigns if c.budget_points is not None]
    spent = await repository.lock_campaigns(conn, budgeted) if budgeted else {}
    stamp_cards = [c.id for c in campaigns if c.kind == "stamps"]
    stamps = await repository.stamps(conn, stamp_cards, cards) if stamp_cards else {}
    window_start = None
    if ladder is not None:
        now: datetime = context[0]["now"].astimezone(UTC)
        months = now.year * 12 + now.month - 1 - (ladder.window_months - 1)
        window_start = date(months // 12, months % 12 + 1, 1)
    return Standing(program, ladder, campaigns, standing, spent, stamps, window_start)

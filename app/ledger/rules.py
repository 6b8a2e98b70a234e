"""The posting rules, as pure functions: who may post what, what a purchase earns, and when a
request is refused. No I/O here; app/ledger/engine.py loads what the rules need and writes
what they decide, for one request or a thousand at a time."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from app.auth.deps import Principal
from app.cards.errors import CardBlocked, CardClosed, CardNotFound
from app.core.config import Settings
from app.core.errors import Forbidden
from app.ledger.errors import (
    CurrencyMismatch,
    DuplicateReference,
    OccurredAtOutOfRange,
    PartnerCannotEarn,
    PartnerCannotRedeem,
    PartnerRequired,
)
from app.ledger.schemas import (
    AwardAccrualCreate,
    PurchaseAccrualCreate,
    RedemptionCreate,
)
from app.models.enums import AccountKind, Asset, CardStatus, TransactionType
from app.partners.errors import PartnerNotFound
from app.programs.service import ProgramContext
from app.rules.campaigns import Campaign
from app.rules.earn import EarnRates, Exclusions, Line, earn_for_purchase, eligible_amount
from app.rules.tiers import Ladder, Tier, tier_bonus

PostingRequest = PurchaseAccrualCreate | AwardAccrualCreate | RedemptionCreate

Leg = tuple[int, str, int]
"""(account id, asset, signed amount). A plan lists each card leg before its counter leg."""


@dataclass(frozen=True)
class Intent:
    """What a request asks for, once the caller's rights are checked: enough to load its
    context (the card, the partner, an earlier posting of the same reference)."""

    type: TransactionType
    card_number: str
    partner_id: uuid.UUID | None
    counter_kind: AccountKind
    reference: str | None
    occurred_at: datetime | None
    purchase_amount: int | None = None
    currency: str | None = None
    description: str | None = None


@dataclass
class Plan:
    """A posting the rules accept, before the card's balance is checked under its lock."""

    intent: Intent
    request: PostingRequest
    card_id: int
    card_accounts: dict[str, int]
    """asset -> the card's account id"""
    legs: list[Leg]
    earned: dict[str, int] | None = None
    """{"points": ..., "cashback": ...}"""
    eligible: int | None = None
    """Purchases: what of the amount earns (and qualifies for tiers)."""
    applied: list[dict[str, Any]] | None = None
    """Purchases: each rule that applied, in the shape of AppliedRule."""
    tier: dict[str, Any] | None = None
    """Purchases, with a tier ladder: the shape of TierState."""
    basket: dict[str, Any] | None = None
    """Purchases: what campaigns need to know of the basket (fields of campaigns.Purchase)."""
    partner_counters: tuple[int, int] | None = None
    """Purchases: the partner's issued accounts (points, cashback), for what it funds."""
    return_window_days: int = 0
    """Purchases: the partner's return window; the points earned wait it out."""
    pending: int = 0
    """Points of this purchase that wait in the pending account (defer_points)."""
    spendable_at: datetime | None = None
    points_price: int | None = None
    """The partner's price per 1,000 points in force: its issue price for a purchase, its
    reimbursement for a redemption (none without a partner, or without prices)."""
    cashback_funded: bool | None = None
    """Purchases at a partner with terms: whether it funds the cashback it grants."""
    referrer: "Referrer | None" = None
    """Purchases of a referred card that has made none yet: the referring card (locked)."""
    referral: "ReferralBonus | None" = None
    """What a referral campaign gives the referrer for this purchase (posted apart)."""


@dataclass(frozen=True)
class Referrer:
    card_id: int
    card_number: str
    points_account: int
    open: bool
    """False: the referring card is blocked or closed, and earns nothing."""


@dataclass(frozen=True)
class ReferralBonus:
    campaign_code: str
    campaign_version: int
    points: int
    funder: int
    """The account that pays it: the operator's issued points, or the campaign's partner's."""
    partner_id: uuid.UUID | None
    """The partner, when it pays."""


def card_closed(replaced_by: str | None) -> CardClosed:
    if replaced_by is None:
        return CardClosed()
    return CardClosed(
        f"The card was replaced by card {replaced_by}.", replaced_by_card_number=replaced_by
    )


def posting_partner(principal: Principal, requested: uuid.UUID | None) -> uuid.UUID | None:
    """Operator keys post for the partner they name (or none); partner keys only as themselves."""
    if principal.is_operator:
        return requested
    if requested is not None and requested != principal.partner_id:
        raise Forbidden("A partner key posts as its own partner only.")
    return principal.partner_id


def check_occurred_at(value: datetime | None, settings: Settings) -> datetime | None:
    """None means "now": the posting is stamped with its database transaction's time."""
    if value is None:
        return None
    now = datetime.now(UTC)
    if value > now + timedelta(seconds=settings.max_clock_skew_seconds):
        raise OccurredAtOutOfRange("occurred_at is in the future; check the till's clock.")
    if value < now - timedelta(days=settings.max_backdate_days):
        raise OccurredAtOutOfRange(
            f"occurred_at is more than {settings.max_backdate_days} days in the past."
        )
    return value


def intent_for(
    request: PostingRequest, principal: Principal, program: ProgramContext, settings: Settings
) -> Intent:
    """Checks that need no database: rights, currency, dates."""
    occurred_at = check_occurred_at(request.occurred_at, settings)
    if isinstance(request, PurchaseAccrualCreate):
        partner_id = posting_partner(principal, request.partner_id)
        if partner_id is None:
            raise PartnerRequired()
        if request.currency != program.currency:
            raise CurrencyMismatch(f"This program's currency is {program.currency}.")
        return Intent(
            type=TransactionType.ACCRUAL,
            card_number=request.card_number,
            partner_id=partner_id,
            counter_kind=AccountKind.PARTNER_ISSUED,
            reference=request.reference,
            occurred_at=occurred_at,
            purchase_amount=request.amount,
            currency=request.currency,
        )
    if isinstance(request, AwardAccrualCreate):
        if not principal.is_operator:
            raise Forbidden("Only the operator awards points outside a purchase.")
        return Intent(
            type=TransactionType.AWARD,
            card_number=request.card_number,
            partner_id=None,
            counter_kind=AccountKind.OPERATOR_ISSUED,
            reference=request.reference,
            occurred_at=occurred_at,
            description=request.reason,
        )
    partner_id = posting_partner(principal, request.partner_id)
    return Intent(
        type=TransactionType.REDEMPTION,
        card_number=request.card_number,
        partner_id=partner_id,
        counter_kind=(
            AccountKind.PARTNER_REDEEMED
            if partner_id is not None
            else AccountKind.OPERATOR_REDEEMED
        ),
        reference=request.reference,
        occurred_at=occurred_at,
    )


def _pair(card_account: int, counter_account: int, asset: Asset, amount: int) -> list[Leg]:
    return [(card_account, asset.value, amount), (counter_account, asset.value, -amount)]


def _credit(plan: Plan, counters: tuple[int, int], points: int, cashback: int) -> None:
    """Credit the card, from the counter accounts (points, cashback) that fund it."""
    if points:
        plan.legs += _pair(plan.card_accounts["points"], counters[0], Asset.POINTS, points)
    if cashback:
        plan.legs += _pair(plan.card_accounts["cashback"], counters[1], Asset.CASHBACK, cashback)
    earned = plan.earned or {"points": 0, "cashback": 0}
    plan.earned = {"points": earned["points"] + points, "cashback": earned["cashback"] + cashback}


def add_tier_bonus(plan: Plan, program: ProgramContext, ladder: Ladder, tier: Tier) -> None:
    """The card's tier adds to what the partner's rule granted; the operator funds it."""
    assert plan.applied is not None and plan.eligible is not None
    bonus = tier_bonus(tier, plan.applied[0]["points"], plan.eligible)
    if not (bonus.points or bonus.cashback):
        return
    counters = (
        program.operator_account(AccountKind.OPERATOR_ISSUED, Asset.POINTS),
        program.operator_account(AccountKind.OPERATOR_ISSUED, Asset.CASHBACK),
    )
    _credit(plan, counters, bonus.points, bonus.cashback)
    plan.applied.append(
        {
            "rule": "tier",
            "rule_ref": tier.code,
            "rule_version": ladder.version,
            "points": bonus.points,
            "cashback": bonus.cashback,
        }
    )


def add_referral_bonus(
    plan: Plan, program: ProgramContext, campaign: Campaign, to_card: int, to_referrer: int
) -> None:
    """A referral campaign: the referred card's bonus is part of its purchase; the
    referrer's is posted as an award of its own on the referring card (engine.py), so that
    corrections of the purchase, which lock only its card, never touch the referrer."""
    if to_card:
        add_campaign_bonus(plan, program, campaign, to_card)
    if to_referrer:
        assert plan.partner_counters is not None
        partner = campaign.partner_id if campaign.funded_by == "partner" else None
        if partner is not None:
            funder = plan.partner_counters[0]
        else:
            funder = program.operator_account(AccountKind.OPERATOR_ISSUED, Asset.POINTS)
        plan.referral = ReferralBonus(campaign.code, campaign.version, to_referrer, funder, partner)


def add_campaign_bonus(
    plan: Plan, program: ProgramContext, campaign: Campaign, points: int
) -> None:
    """A campaign's bonus points, funded by the operator or by the partner it is for."""
    assert plan.applied is not None and plan.partner_counters is not None
    if campaign.funded_by == "partner":
        counter = plan.partner_counters[0]
    else:
        counter = program.operator_account(AccountKind.OPERATOR_ISSUED, Asset.POINTS)
    _credit(plan, (counter, counter), points, 0)
    plan.applied.append(
        {
            "rule": "campaign",
            "rule_ref": campaign.code,
            "rule_version": campaign.version,
            "points": points,
            "cashback": 0,
        }
    )


def defer_points(plan: Plan, program: ProgramContext, occurred_at: datetime, now: datetime) -> None:
    """A purchase at a partner with a return window: the points it earned (every rule's) go
    to the pending account until the window passes (app/pending/service.py); cashback does
    not wait. A purchase sent after its window passed is spendable at once."""
    if not plan.return_window_days:
        return
    spendable_at = occurred_at + timedelta(days=plan.return_window_days)
    if spendable_at <= now:
        return
    waiting = program.operator_account(AccountKind.OPERATOR_PENDING, Asset.POINTS)
    points_account = plan.card_accounts[Asset.POINTS.value]
    for index in range(0, len(plan.legs), 2):  # each credit leg, then the leg funding it
        account, asset, amount = plan.legs[index]
        if account == points_account and amount > 0:
            plan.legs[index] = (waiting, asset, amount)
            plan.pending += amount
    if plan.pending:
        plan.spendable_at = spendable_at


def plan_for(
    intent: Intent,
    request: PostingRequest,
    ctx: dict[str, Any],
    program: ProgramContext,
) -> Plan:
    """Checks against what the database holds. `ctx` is a row of the context query. (A
    reference posted earlier in the same group is the engine's check: it knows the order.)"""
    if ctx["card_id"] is None:
        raise CardNotFound()
    if ctx["card_status"] == CardStatus.CLOSED or ctx["card_closed_now"]:
        # card_closed_now is read under the card's lock: a replacement that committed while
        # this posting waited for the lock is seen here, even if card_status is older. The
        # engine names the replacement card in the refusal.
        raise CardClosed()
    if ctx["card_status"] == CardStatus.BLOCKED:
        raise CardBlocked()
    if intent.partner_id is not None and ctx["partner_id"] is None:
        raise PartnerNotFound()
    if intent.reference is not None and ctx["duplicate_id"] is not None:
        raise DuplicateReference(
            f"Reference {intent.reference!r} was already posted.",
            transaction_id=str(ctx["duplicate_id"]),
        )
    card_accounts = {
        Asset.POINTS.value: ctx["card_points_account"],
        Asset.CASHBACK.value: ctx["card_cashback_account"],
    }
    plan = Plan(intent, request, ctx["card_id"], card_accounts, legs=[])

    if isinstance(request, PurchaseAccrualCreate):
        if not ctx["can_earn"]:
            raise PartnerCannotEarn()
        excluded = Exclusions(
            frozenset(ctx["excluded_categories"]), frozenset(ctx["excluded_skus"])
        )
        lines = None
        if request.lines is not None:
            lines = [Line(line.sku, line.category, line.amount) for line in request.lines]
        plan.eligible = eligible_amount(request.amount, lines, request.redeemed_amount, excluded)
        rates = EarnRates(ctx["earn_points"], ctx["earn_per_amount"], ctx["cashback_bps"])
        earned = earn_for_purchase(plan.eligible, rates)
        plan.partner_counters = (ctx["counter_points_account"], ctx["counter_cashback_account"])
        plan.return_window_days = ctx["return_window_days"]
        plan.points_price = ctx["issue_per_1000"]
        plan.cashback_funded = ctx["funds_cashback"]
        if ctx["referrer_card_id"] is not None and ctx["referrer_points"] is not None:
            plan.referrer = Referrer(
                ctx["referrer_card_id"],
                ctx["referrer_card_number"],
                ctx["referrer_points_account"],
                bool(ctx["referrer_open"]),
            )
        plan.basket = {
            "amount": request.amount,
            "lines": lines,
            "redeemed_amount": request.redeemed_amount,
            "excluded": excluded,
            "rates": rates,
        }
        _credit(plan, plan.partner_counters, earned.points, earned.cashback)
        plan.applied = [
            {
                "rule": "base",
                "rule_ref": str(intent.partner_id),
                "rule_version": ctx["earn_rule_version"],
                "points": earned.points,
                "cashback": earned.cashback,
            }
        ]
    elif isinstance(request, AwardAccrualCreate):
        counter = program.operator_account(AccountKind.OPERATOR_ISSUED, Asset.POINTS)
        plan.legs = _pair(ctx["card_points_account"], counter, Asset.POINTS, request.points)
        plan.earned = {"points": request.points, "cashback": 0}
    else:
        if intent.partner_id is not None and not ctx["can_redeem"]:
            raise PartnerCannotRedeem()
        if intent.partner_id is None:
            counter = program.operator_account(AccountKind.OPERATOR_REDEEMED, request.asset)
        elif request.asset == Asset.POINTS:
            counter = ctx["counter_points_account"]
        else:
            counter = ctx["counter_cashback_account"]
        plan.legs = _pair(card_accounts[request.asset], counter, request.asset, -request.amount)
        if intent.partner_id is not None and request.asset == Asset.POINTS:
            plan.points_price = ctx["reimbursement_per_1000"]
    return plan


def answer_for(
    plan: Plan,
    program: ProgramContext,
    transaction_id: uuid.UUID | None,
    posted_at: datetime | None,
    occurred_at: datetime,
    balances: dict[str, int],
) -> tuple[int, dict[str, Any]]:
    """The HTTP answer to a posting: 201 with what moved, or 200 when nothing was earned.

    Plain dicts in the shape (and field order) of AccrualRead and RedemptionRead, which
    document them: building and dumping a pydantic model per posting cost more than the rest of
    a batch item's rules. tests/ledger/test_answers.py holds the two in step."""
    request = plan.request
    if isinstance(request, RedemptionCreate):
        assert transaction_id is not None and posted_at is not None
        return 201, {
            "transaction_id": transaction_id,
            "card_number": request.card_number,
            "partner_id": plan.intent.partner_id,
            "reference": request.reference,
            "asset": request.asset.value,
            "amount": request.amount,
            "occurred_at": occurred_at,
            "posted_at": posted_at,
            "balance": balances,
            "currency": program.currency,
        }
    assert plan.earned is not None
    return (201 if transaction_id else 200), {
        "transaction_id": transaction_id,
        "kind": "purchase" if isinstance(request, PurchaseAccrualCreate) else "award",
        "card_number": request.card_number,
        "partner_id": plan.intent.partner_id,
        "reference": request.reference,
        "occurred_at": occurred_at,
        "posted_at": posted_at,
        "earned": plan.earned,
        "eligible_amount": plan.eligible,
        "applied": plan.applied or [],
        "tier": plan.tier,
        "pending": plan.pending,
        "spendable_at": plan.spendable_at,
        "balance": balances,
        "currency": program.currency,
    }

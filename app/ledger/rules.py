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
from app.ledger.earn import EarnRates, earn_for_purchase
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
        rates = EarnRates(ctx["earn_points"], ctx["earn_per_amount"], ctx["cashback_bps"])
        earned = earn_for_purchase(request.amount, rates)
        if earned.points:
            plan.legs += _pair(
                ctx["card_points_account"],
                ctx["counter_points_account"],
                Asset.POINTS,
                earned.points,
            )
        if earned.cashback:
            plan.legs += _pair(
                ctx["card_cashback_account"],
                ctx["counter_cashback_account"],
                Asset.CASHBACK,
                earned.cashback,
            )
        plan.earned = {"points": earned.points, "cashback": earned.cashback}
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
        "balance": balances,
        "currency": program.currency,
    }

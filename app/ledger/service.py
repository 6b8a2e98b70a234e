"""Use cases of the ledger: accrue, redeem, and read what a card has and did.

Each posting runs inside the request's unit of work (see app/db/session.py) and the
idempotency wrapper (app/idempotency/service.py); refusals raise before anything is written,
or come from the single posting statement, which writes nothing when it refuses."""

import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.deps import Principal
from app.cards.errors import CardBlocked, CardNotFound
from app.core.config import Settings
from app.core.errors import Forbidden
from app.core.ids import uuid7
from app.db.errors import violated_constraint
from app.ledger import repository
from app.ledger.earn import EarnRates, earn_for_purchase
from app.ledger.errors import (
    CurrencyMismatch,
    DuplicateReference,
    InsufficientBalance,
    InvalidCursor,
    OccurredAtOutOfRange,
    PartnerCannotEarn,
    PartnerCannotRedeem,
    PartnerRequired,
    TransactionNotFound,
)
from app.ledger.schemas import (
    AccrualRead,
    AssetAmounts,
    AwardAccrualCreate,
    BalanceRead,
    CardTransactionPage,
    CardTransactionRead,
    EntryRead,
    PurchaseAccrualCreate,
    RedemptionCreate,
    RedemptionRead,
    TransactionRead,
)
from app.models.enums import AccountKind, Asset, CardStatus, TransactionType
from app.partners.errors import PartnerNotFound
from app.programs.service import ProgramContext

_REFERENCE_INDEXES = {"uq_transactions_partner_reference", "uq_transactions_operator_reference"}

Leg = tuple[int, str, int]
"""(account id, asset, signed amount)"""


def _posting_partner(principal: Principal, requested: uuid.UUID | None) -> uuid.UUID | None:
    """Operator keys post for the partner they name (or none); partner keys only as themselves."""
    if principal.is_operator:
        return requested
    if requested is not None and requested != principal.partner_id:
        raise Forbidden("A partner key posts as its own partner only.")
    return principal.partner_id


def _check_occurred_at(value: datetime | None, settings: Settings) -> datetime | None:
    """None means "now": the database stamps it with the transaction's own time."""
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


@dataclass(frozen=True)
class Header:
    """What a posting says about itself, besides its entries."""

    type: TransactionType
    partner_id: uuid.UUID | None
    reference: str | None
    occurred_at: datetime | None
    purchase_amount: int | None = None
    currency: str | None = None
    description: str | None = None


async def _load_context(
    conn: AsyncConnection,
    program: ProgramContext,
    header: Header,
    card_number: str,
    counter_kind: AccountKind,
) -> Row[tuple[object, ...]]:
    """The card, the partner and any earlier posting of the same reference; refuses an unknown
    or blocked card and a duplicate reference."""
    ctx = await repository.load_context(
        conn,
        program_id=program.id,
        card_number=card_number,
        partner_id=header.partner_id,
        counter_kind=counter_kind,
        type=header.type,
        reference=header.reference,
    )
    if ctx.card_id is None:
        raise CardNotFound()
    if ctx.card_status == CardStatus.BLOCKED:
        raise CardBlocked()
    if header.partner_id is not None and ctx.partner_id is None:
        raise PartnerNotFound()
    if header.reference is not None and ctx.duplicate_id is not None:
        raise DuplicateReference(
            f"Reference {header.reference!r} was already posted.",
            transaction_id=str(ctx.duplicate_id),
        )
    return ctx


async def _post(
    conn: AsyncConnection,
    program: ProgramContext,
    principal: Principal,
    header: Header,
    *,
    card_id: int,
    legs: list[Leg],
) -> tuple[uuid.UUID, repository.PostingRow]:
    """Write the transaction and its legs in one statement. Card legs are the ones whose
    account is the card's: those are locked and balance-checked."""
    transaction_id = uuid7()
    row = {
        "id": transaction_id,
        "program_id": program.id,
        "type": header.type.value,
        "partner_id": header.partner_id,
        "api_key_id": principal.api_key_id,
        "reference": header.reference,
        "purchase_amount": header.purchase_amount,
        "currency": header.currency,
        "description": header.description,
        "occurred_at": header.occurred_at,
    }
    try:
        result = await repository.post(
            conn,
            transaction=row,
            card_id=card_id,
            card_accounts=sorted(leg[0] for leg in legs[::2]),
            legs=legs,
        )
    except IntegrityError as exc:
        if violated_constraint(exc) in _REFERENCE_INDEXES:
            # Another request with the same reference committed between our context read and
            # this insert. The transaction is aborted, so this answer cannot be stored.
            err = DuplicateReference(f"Reference {header.reference!r} was already posted.")
            err.replayable = False
            raise err from exc
        raise
    if not result.applied and result.moved_count > 0:
        # Some card legs applied and others did not: the statement wrote a partial update.
        # Raising rolls the whole unit of work back. (Unreachable with today's postings:
        # only single-leg debits can be refused.)
        raise RuntimeError("posting partially applied; rolled back")
    return transaction_id, result


def _pair(card_account: int, counter_account: int, asset: Asset, amount: int) -> list[Leg]:
    """A card leg and its counter leg; the card leg always comes first (see `_post`)."""
    return [(card_account, asset.value, amount), (counter_account, asset.value, -amount)]


def _balances(balances: dict[str, int]) -> AssetAmounts:
    return AssetAmounts(points=balances[Asset.POINTS], cashback=balances[Asset.CASHBACK])


async def accrue_purchase(
    conn: AsyncConnection,
    program: ProgramContext,
    settings: Settings,
    principal: Principal,
    req: PurchaseAccrualCreate,
) -> tuple[int, AccrualRead]:
    partner_id = _posting_partner(principal, req.partner_id)
    if partner_id is None:
        raise PartnerRequired()
    if req.currency != program.currency:
        raise CurrencyMismatch(f"This program's currency is {program.currency}.")
    header = Header(
        type=TransactionType.ACCRUAL,
        partner_id=partner_id,
        reference=req.reference,
        occurred_at=_check_occurred_at(req.occurred_at, settings),
        purchase_amount=req.amount,
        currency=req.currency,
    )
    ctx = await _load_context(conn, program, header, req.card_number, AccountKind.PARTNER_ISSUED)
    if not ctx.can_earn:
        raise PartnerCannotEarn()

    earned = earn_for_purchase(
        req.amount, EarnRates(ctx.earn_points, ctx.earn_per_amount, ctx.cashback_bps)
    )
    legs: list[Leg] = []
    if earned.points:
        legs += _pair(
            ctx.card_points_account, ctx.counter_points_account, Asset.POINTS, earned.points
        )
    if earned.cashback:
        legs += _pair(
            ctx.card_cashback_account, ctx.counter_cashback_account, Asset.CASHBACK, earned.cashback
        )

    answer = {
        "kind": "purchase",
        "card_number": req.card_number,
        "partner_id": partner_id,
        "reference": req.reference,
        "earned": AssetAmounts(points=earned.points, cashback=earned.cashback),
        "currency": program.currency,
    }
    if not legs:
        # Too small a purchase to earn a whole point or cent: nothing to post.
        row = await repository.balance(conn, program.id, req.card_number)
        assert row is not None
        current = AssetAmounts(points=row.points, cashback=row.cashback)
        return 200, AccrualRead(
            transaction_id=None,
            occurred_at=header.occurred_at or datetime.now(UTC),
            posted_at=None,
            balance=current,
            **answer,
        )

    transaction_id, result = await _post(
        conn, program, principal, header, card_id=ctx.card_id, legs=legs
    )
    return 201, AccrualRead(
        transaction_id=transaction_id,
        occurred_at=result.occurred_at,
        posted_at=result.posted_at,
        balance=_balances(result.balances),
        **answer,
    )


async def accrue_award(
    conn: AsyncConnection,
    program: ProgramContext,
    settings: Settings,
    principal: Principal,
    req: AwardAccrualCreate,
) -> tuple[int, AccrualRead]:
    if not principal.is_operator:
        raise Forbidden("Only the operator awards points outside a purchase.")
    header = Header(
        type=TransactionType.AWARD,
        partner_id=None,
        reference=req.reference,
        occurred_at=_check_occurred_at(req.occurred_at, settings),
        description=req.reason,
    )
    ctx = await _load_context(conn, program, header, req.card_number, AccountKind.OPERATOR_ISSUED)
    counter = program.operator_account(AccountKind.OPERATOR_ISSUED, Asset.POINTS)
    legs = _pair(ctx.card_points_account, counter, Asset.POINTS, req.points)
    transaction_id, result = await _post(
        conn, program, principal, header, card_id=ctx.card_id, legs=legs
    )
    return 201, AccrualRead(
        transaction_id=transaction_id,
        kind="award",
        card_number=req.card_number,
        partner_id=None,
        reference=req.reference,
        occurred_at=result.occurred_at,
        posted_at=result.posted_at,
        earned=AssetAmounts(points=req.points, cashback=0),
        balance=_balances(result.balances),
        currency=program.currency,
    )


async def redeem(
    conn: AsyncConnection,
    program: ProgramContext,
    settings: Settings,
    principal: Principal,
    req: RedemptionCreate,
) -> tuple[int, RedemptionRead]:
    partner_id = _posting_partner(principal, req.partner_id)
    header = Header(
        type=TransactionType.REDEMPTION,
        partner_id=partner_id,
        reference=req.reference,
        occurred_at=_check_occurred_at(req.occurred_at, settings),
    )
    at_partner = partner_id is not None
    counter_kind = AccountKind.PARTNER_REDEEMED if at_partner else AccountKind.OPERATOR_REDEEMED
    ctx = await _load_context(conn, program, header, req.card_number, counter_kind)
    if at_partner and not ctx.can_redeem:
        raise PartnerCannotRedeem()

    if req.asset == Asset.POINTS:
        card_account, counter = ctx.card_points_account, ctx.counter_points_account
    else:
        card_account, counter = ctx.card_cashback_account, ctx.counter_cashback_account
    if not at_partner:
        counter = program.operator_account(AccountKind.OPERATOR_REDEEMED, req.asset)

    legs = _pair(card_account, counter, req.asset, -req.amount)
    transaction_id, result = await _post(
        conn, program, principal, header, card_id=ctx.card_id, legs=legs
    )
    if not result.applied:
        available = result.balances[req.asset]
        raise InsufficientBalance(
            f"The card holds {available} {req.asset.value}; {req.amount} were asked for.",
            asset=req.asset.value,
            available=available,
            requested=req.amount,
        )
    return 201, RedemptionRead(
        transaction_id=transaction_id,
        card_number=req.card_number,
        partner_id=partner_id,
        reference=req.reference,
        asset=req.asset,
        amount=req.amount,
        occurred_at=result.occurred_at,
        posted_at=result.posted_at,
        balance=_balances(result.balances),
        currency=program.currency,
    )


async def balance(conn: AsyncConnection, program: ProgramContext, card_number: str) -> BalanceRead:
    row = await repository.balance(conn, program.id, card_number)
    if row is None:
        raise CardNotFound()
    return BalanceRead(
        card_number=row.card_number,
        status=row.status,
        points=row.points,
        cashback=row.cashback,
        currency=program.currency,
    )


def encode_cursor(posted_at: datetime, transaction_id: uuid.UUID) -> str:
    raw = f"{posted_at.isoformat()}|{transaction_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        posted_at, transaction_id = raw.split("|")
        parsed = datetime.fromisoformat(posted_at)
        if parsed.tzinfo is None:
            raise ValueError("naive timestamp")
        # Normalizing here catches offsets that push a date past year 1 or 9999.
        return parsed.astimezone(UTC), uuid.UUID(transaction_id)
    except (ValueError, OverflowError) as exc:
        raise InvalidCursor() from exc


async def card_history(
    conn: AsyncConnection,
    program: ProgramContext,
    principal: Principal,
    card_number: str,
    cursor: str | None,
    limit: int,
) -> CardTransactionPage:
    before = decode_cursor(cursor) if cursor else None
    card_id = await repository.card_id(conn, program.id, card_number)
    if card_id is None:
        raise CardNotFound()
    rows = await repository.card_history(
        conn,
        card_id=card_id,
        # A partner sees what happened at its own tills only.
        partner_id=None if principal.is_operator else principal.partner_id,
        before=before,
        limit=limit + 1,
    )
    items = [CardTransactionRead(**r._mapping) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor(last.posted_at, last.id)
    return CardTransactionPage(items=items, next_cursor=next_cursor)


async def get_transaction(
    conn: AsyncConnection, program: ProgramContext, principal: Principal, transaction_id: uuid.UUID
) -> TransactionRead:
    row = await repository.transaction(conn, program.id, transaction_id)
    # To a partner, another partner's transaction does not exist (404, not 403: no probing).
    if row is None or (not principal.is_operator and row.partner_id != principal.partner_id):
        raise TransactionNotFound()
    entries = await repository.transaction_entries(conn, transaction_id)
    return TransactionRead(**row._mapping, entries=[EntryRead(**e._mapping) for e in entries])

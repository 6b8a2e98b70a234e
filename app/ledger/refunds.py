"""Redemption refunds: an order paid partly with points or cashback is refunded, and what was
spent goes back to the card, in part or in full, never more than was spent.

Each refund is a `refund` transaction correcting the redemption: the card's account gets the
amount back, the account that received the redemption (the partner's, or the operator's) gives
it back. The refunds so far are summed under the card's lock, so two refunds racing past the
original cannot both succeed; a reversed redemption has nothing left to refund.
"""

import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.deps import Principal
from app.cards.errors import CardClosed
from app.core.ids import uuid7
from app.db.errors import violated_constraint
from app.ledger import repository
from app.ledger.errors import (
    DuplicateReference,
    NotARedemption,
    RefundExceedsOriginal,
    TransactionNotFound,
)
from app.ledger.schemas import CardBalances, RefundCreate, RefundRead
from app.models.enums import CardStatus, TransactionType
from app.programs.service import ProgramContext


async def refund_redemption(
    conn: AsyncConnection,
    program: ProgramContext,
    principal: Principal,
    redemption_id: uuid.UUID,
    req: RefundCreate,
) -> tuple[int, RefundRead]:
    original = await repository.reversal_target(conn, program.id, redemption_id)
    if original is None or (
        not principal.is_operator and original.partner_id != principal.partner_id
    ):
        raise TransactionNotFound()
    if original.type != TransactionType.REDEMPTION:
        raise NotARedemption(f"Transaction {redemption_id} is a {original.type}.")

    accounts = await repository.lock_card_accounts(conn, original.card_id)
    if original.status == CardStatus.CLOSED or any(a.closed_at for a in accounts):
        raise CardClosed(f"Card {original.card_number} is closed.")
    card_accounts = {a.id: a for a in accounts}
    entries = await repository.original_entries(conn, redemption_id)
    card_leg = next(e for e in entries if e.account_id in card_accounts)
    counter_leg = next(e for e in entries if e.account_id not in card_accounts)
    spent = -card_leg.amount

    refunded, reversed_ = await repository.returned(conn, redemption_id, list(card_accounts))
    refundable = 0 if reversed_ else spent - refunded
    if req.amount > refundable:
        raise RefundExceedsOriginal(
            f"{refundable} of the {spent} {card_leg.asset} spent can still be refunded.",
            spent=spent,
            refunded=spent if reversed_ else refunded,
            refundable=refundable,
        )

    account = card_accounts[card_leg.account_id]
    new_balance = account.balance + req.amount
    refund_id = uuid7()
    try:
        posted_at = await repository.correct(
            conn,
            {
                "id": refund_id,
                "program_id": program.id,
                "type": TransactionType.REFUND.value,
                "card_id": original.card_id,
                "partner_id": original.partner_id,
                "api_key_id": principal.api_key_id,
                "reference": req.reference,
                "description": req.reason,
                "corrects_id": redemption_id,
                "card_account": card_leg.account_id,
                "counter_account": counter_leg.account_id,
                "asset": card_leg.asset,
                "amount": req.amount,
                "new_balance": new_balance,
            },
        )
    except IntegrityError as exc:
        if violated_constraint(exc) not in (
            "uq_transactions_partner_reference",
            "uq_transactions_operator_reference",
        ):
            raise
        err = DuplicateReference(f"Reference {req.reference!r} was already posted.")
        err.replayable = False
        raise err from exc
    balances = {a.asset: a.balance for a in accounts}
    balances[card_leg.asset] = new_balance
    return 201, RefundRead(
        transaction_id=refund_id,
        corrects_id=redemption_id,
        card_number=original.card_number,
        asset=card_leg.asset,
        amount=req.amount,
        refunded_total=refunded + req.amount,
        refundable=refundable - req.amount,
        balance=CardBalances(**balances),
        posted_at=posted_at,
    )

"""Redemption refunds: an order paid partly with points or cashback is refunded, and what was
spent (by a redemption, or by a hold's capture) goes back to the card, in part or in full,
never more than was spent.

Each refund is a `refund` transaction correcting the redemption: the card's account gets the
amount back, the account that received the redemption (the partner's, or the operator's) gives
it back. The refunds so far are summed under the card's lock, so two refunds racing past the
original cannot both succeed; a reversed redemption has nothing left to refund.
"""

import uuid

from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.deps import Principal
from app.core.ids import uuid7
from app.ledger import corrections, repository
from app.ledger.errors import NotARedemption, RefundExceedsOriginal
from app.ledger.schemas import CardBalances, RefundCreate, RefundRead
from app.models.enums import AccountKind, TransactionType
from app.programs.service import ProgramContext

_SPENDING = {TransactionType.REDEMPTION, TransactionType.CAPTURE}
_RECEIVERS = {AccountKind.PARTNER_REDEEMED, AccountKind.OPERATOR_REDEEMED}


async def refund_redemption(
    conn: AsyncConnection,
    program: ProgramContext,
    principal: Principal,
    redemption_id: uuid.UUID,
    req: RefundCreate,
) -> tuple[int, RefundRead]:
    original = await corrections.original(conn, program, principal, redemption_id)
    if original.type not in _SPENDING:
        raise NotARedemption(f"Transaction {redemption_id} is a {original.type}.")
    card_id, card_number, accounts = await corrections.lock_current_card(
        conn, program, original.card_id
    )
    # The leg that received what was spent: the partner's (or the operator's) redeemed account.
    # (A capture spent from the held account, not the card's: the refund goes to the card.)
    counter_leg = next(
        e for e in await repository.original_entries(conn, redemption_id) if e.kind in _RECEIVERS
    )
    card_leg = next(a for a in accounts if a.asset == counter_leg.asset)
    spent = counter_leg.amount

    refunded, reversed_ = await repository.returned(conn, redemption_id)
    refundable = 0 if reversed_ else spent - refunded
    if req.amount > refundable:
        raise RefundExceedsOriginal(
            f"{refundable} of the {spent} {card_leg.asset} spent can still be refunded.",
            spent=spent,
            refunded=spent if reversed_ else refunded,
            refundable=refundable,
        )

    new_balance = card_leg.balance + req.amount
    refund_id = uuid7()
    posted_at = await corrections.write(
        conn,
        {
            "id": refund_id,
            "program_id": program.id,
            "type": TransactionType.REFUND.value,
            "card_id": card_id,
            "partner_id": original.partner_id,
            "api_key_id": principal.api_key_id,
            "reference": req.reference,
            "description": req.reason,
            "corrects_id": redemption_id,
        },
        {card_leg.id: new_balance},
        [
            (card_leg.id, card_leg.asset, req.amount),
            (counter_leg.account_id, card_leg.asset, -req.amount),
        ],
    )
    balances = {a.asset: a.balance for a in accounts}
    balances[card_leg.asset] = new_balance
    return 201, RefundRead(
        transaction_id=refund_id,
        corrects_id=redemption_id,
        card_number=card_number,
        asset=card_leg.asset,
        amount=req.amount,
        refunded_total=refunded + req.amount,
        refundable=refundable - req.amount,
        balance=CardBalances(**balances),
        posted_at=posted_at,
    )

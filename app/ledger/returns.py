"""Returns: goods bought in a purchase come back, and what the purchase earned is taken back in
proportion to the value returned, from the amounts recorded at earn time (the accrual's own
entries; today's rates never enter into it).

Rounding: what a purchase earned is a set of legs (the partner's rule, the tier bonus, each
campaign), each funded by someone. Once the returns of a purchase P add up to R, the card has
given back exactly floor(earned * R / P) of each leg, to its funder; each return takes the
difference from the total before it. So no split of returns ever takes back more than was
earned, and when everything has come back (R = P) exactly what was earned has been taken back,
whatever the split. A return too small to take back anything yet is still recorded: it counts
towards the next one.

Points of the purchase still waiting out the partner's return window (app/pending/) are taken
back from there first; only the rest comes off the card's balance.

If the card has already spent what is taken back, its balance goes below zero: a clawback debt.
The database allows a negative balance only to refunds and reversals (migration 0006); the
posting engine refuses any spending while it lasts, and earnings pay it off.

The returns so far are summed under the card's lock, so two returns racing past the purchase
cannot both succeed.
"""

import uuid

from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.deps import Principal
from app.core.ids import uuid7
from app.db.session import driver_connection
from app.ledger import corrections, repository
from app.ledger.errors import (
    AlreadyReversed,
    DuplicateReference,
    NotAPurchase,
    RefundExceedsOriginal,
)
from app.ledger.schemas import AssetAmounts, PurchaseReturnCreate, PurchaseReturnRead
from app.models.enums import AccountKind, TransactionType
from app.pending import repository as pending
from app.programs.service import ProgramContext
from app.rules import repository as rules

_CREDITED = {AccountKind.CARD, AccountKind.OPERATOR_PENDING}
"""Where an accrual's credit legs went: the card, or the pending account for the card."""


def taken_back(earned: int, purchase: int, returned_before: int, returning: int) -> int:
    """What a return of `returning` takes of `earned`, after `returned_before` came back."""
    return earned * (returned_before + returning) // purchase - earned * returned_before // purchase


async def return_goods(
    conn: AsyncConnection,
    program: ProgramContext,
    principal: Principal,
    accrual_id: uuid.UUID,
    req: PurchaseReturnCreate,
) -> tuple[int, PurchaseReturnRead]:
    original = await corrections.original(conn, program, principal, accrual_id)
    if original.type != TransactionType.ACCRUAL or original.purchase_amount is None:
        raise NotAPurchase(f"Transaction {accrual_id} is a {original.type}.")
    card_id, card_number, accounts = await corrections.lock_current_card(
        conn, program, original.card_id
    )
    reversal = await repository.existing_reversal(conn, accrual_id)
    if reversal is not None:
        raise AlreadyReversed(
            "The purchase was reversed: everything it earned was taken back already.",
            transaction_id=str(reversal),
        )
    purchase = original.purchase_amount
    returned, reference_taken = await repository.purchase_returns(
        conn, accrual_id, original.partner_id, req.reference
    )
    if reference_taken:
        raise DuplicateReference(f"Return {req.reference!r} was already posted.")
    if returned + req.amount > purchase:
        raise RefundExceedsOriginal(
            f"{purchase - returned} of the purchase of {purchase} can still be returned.",
            purchase_amount=purchase,
            returned=returned,
            returnable=purchase - returned,
        )

    # Each card leg of the accrual came with the leg that funded it (the partner's rule, the
    # operator's tier bonus, a campaign's funder): each is taken back in proportion, and goes
    # back to whoever funded it. At a full return every leg is taken back exactly.
    # Points still waiting out the return window are taken back from there first.
    card = {a.asset: a for a in accounts}
    raw = await driver_connection(conn)
    waiting = await pending.waiting_of(raw, accrual_id)
    from_pending = 0
    take = {"points": 0, "cashback": 0}
    balances: dict[int, int] = {}
    legs: list[tuple[int, str, int]] = []
    entries = await repository.original_entries(conn, accrual_id)
    for credit, funder in zip(entries[0::2], entries[1::2], strict=True):
        assert credit.kind in _CREDITED and funder.kind not in _CREDITED
        amount = taken_back(credit.amount, purchase, returned, req.amount)
        if not amount:
            continue
        take[credit.asset] += amount
        if credit.kind == AccountKind.OPERATOR_PENDING:
            part = min(amount, waiting - from_pending)
            if part:
                from_pending += part
                amount -= part
                legs += [
                    (credit.account_id, credit.asset, -part),
                    (funder.account_id, credit.asset, part),
                ]
        if amount:
            account = card[credit.asset]
            balances[account.id] = balances.get(account.id, account.balance) - amount
            legs += [(account.id, credit.asset, -amount), (funder.account_id, credit.asset, amount)]

    transaction_id = uuid7() if legs else None
    if transaction_id is not None:
        await corrections.write(
            conn,
            {
                "id": transaction_id,
                "program_id": program.id,
                "type": TransactionType.REFUND.value,
                "card_id": card_id,
                "partner_id": original.partner_id,
                "api_key_id": principal.api_key_id,
                "reference": req.reference,
                "description": req.reason,
                "corrects_id": accrual_id,
                "purchase_amount": req.amount,
                "currency": original.currency,
            },
            balances,
            legs,
        )
    if from_pending:
        await pending.take(raw, accrual_id, from_pending)
    if original.eligible_amount:
        # The return also takes back qualifying spend, in the same proportion, from the month
        # of the purchase (the card does not move down before the tier review).
        spend = taken_back(original.eligible_amount, purchase, returned, req.amount)
        if spend:
            await rules.add_spend(conn, card_id, original.occurred_at, -spend)
    if returned + req.amount == purchase:
        await rules.unstamp(conn, accrual_id, card_id)
    return_id = uuid7()
    posted_at = await corrections.guard_reference(
        repository.insert_purchase_return(
            conn,
            id=return_id,
            accrual_id=accrual_id,
            partner_id=original.partner_id,
            amount=req.amount,
            transaction_id=transaction_id,
            api_key_id=principal.api_key_id,
            reference=req.reference,
        ),
        req.reference,
    )
    after = {a.asset: balances.get(a.id, a.balance) for a in accounts}
    return 201, PurchaseReturnRead(
        return_id=return_id,
        transaction_id=transaction_id,
        corrects_id=accrual_id,
        card_number=card_number,
        amount=req.amount,
        returned_total=returned + req.amount,
        returnable=purchase - returned - req.amount,
        taken_back=AssetAmounts(**take),
        balance=AssetAmounts(**after),
        debt=AssetAmounts(**{asset: max(0, -value) for asset, value in after.items()}),
        posted_at=posted_at,
    )

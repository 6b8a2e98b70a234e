"""Reversals: a till cancels a posting it made (wrong card, wrong amount). The reversal is a new
transaction whose entries are the original's negated, referencing it by `corrects_id`; a
transaction is reversed at most once (a unique index, and a check made under the card's lock).

Reversing an accrual the card has spent since is a clawback: the balance goes below zero, a
debt that later earnings pay off (see app/ledger/returns.py).
"""

import uuid

from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.deps import Principal
from app.core.ids import uuid7
from app.db.session import driver_connection
from app.ledger import corrections, repository
from app.ledger.errors import (
    AlreadyRefunded,
    AlreadyReversed,
    NotReversible,
)
from app.ledger.schemas import CardBalances, ReversalCreate, ReversalRead
from app.models.enums import AccountKind, TransactionType
from app.pending import repository as pending
from app.programs.service import ProgramContext
from app.rules import repository as rules

_REVERSIBLE = {TransactionType.ACCRUAL, TransactionType.AWARD, TransactionType.REDEMPTION}


async def reverse(
    conn: AsyncConnection,
    program: ProgramContext,
    principal: Principal,
    transaction_id: uuid.UUID,
    req: ReversalCreate,
) -> tuple[int, ReversalRead]:
    original = await corrections.original(conn, program, principal, transaction_id)
    if original.type not in _REVERSIBLE:
        raise NotReversible(f"A {original.type} cannot be reversed.")
    accounts = await corrections.lock_open_card(
        conn, program, original.card_id, original.card_number, original.status
    )
    earlier = await repository.existing_reversal(conn, transaction_id)
    if earlier is not None:
        raise AlreadyReversed(transaction_id=str(earlier))
    if original.type == TransactionType.REDEMPTION:
        refunded, _ = await repository.returned(conn, transaction_id)
        if refunded:
            raise AlreadyRefunded(refunded=refunded)
    if original.type == TransactionType.ACCRUAL:
        returned, _ = await repository.purchase_returns(conn, transaction_id, None, None)
        if returned:
            raise AlreadyRefunded(
                "Goods of this purchase were returned: return the rest instead of reversing it.",
                returned=returned,
            )

    balances = {a.id: a.balance for a in accounts}
    asset_of = {a.id: a.asset for a in accounts}
    card_account = {a.asset: a.id for a in accounts}
    change = {"points": 0, "cashback": 0}
    legs = []
    # A purchase's points still waiting out the return window come back from there; what
    # matured since comes off the card.
    raw = await driver_connection(conn)
    waiting = await pending.waiting_of(raw, transaction_id)
    from_pending = 0
    for entry in await repository.original_entries(conn, transaction_id):
        amount = entry.amount
        if entry.kind == AccountKind.OPERATOR_PENDING and amount > 0:
            part = min(amount, waiting - from_pending)
            if part:
                from_pending += part
                legs.append((entry.account_id, entry.asset, -part))
                amount -= part
            if not amount:
                continue
            account = card_account[entry.asset]
        else:
            account = entry.account_id
        legs.append((account, entry.asset, -amount))
        if account in balances:
            balances[account] -= amount
            change[entry.asset] -= amount
    if from_pending:
        await pending.take(raw, transaction_id, from_pending)
    if original.type == TransactionType.ACCRUAL and original.eligible_amount:
        # The purchase never happened: it stops counting towards the card's tier.
        spend = -original.eligible_amount
        await rules.add_spend(conn, original.card_id, original.occurred_at, spend)
        await rules.unstamp(conn, transaction_id, original.card_id)
    reversal_id = uuid7()
    posted_at = await corrections.write(
        conn,
        {
            "id": reversal_id,
            "program_id": program.id,
            "type": TransactionType.REVERSAL.value,
            "card_id": original.card_id,
            "partner_id": original.partner_id,
            "api_key_id": principal.api_key_id,
            "description": req.reason,
            "corrects_id": transaction_id,
        },
        balances,
        legs,
    )
    by_asset = {asset_of[account]: balance for account, balance in balances.items()}
    return 201, ReversalRead(
        transaction_id=reversal_id,
        corrects_id=transaction_id,
        card_number=original.card_number,
        reversed=CardBalances(**change),
        balance=CardBalances(**by_asset),
        posted_at=posted_at,
    )

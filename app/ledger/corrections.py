"""What transfers, reversals and refunds share. They run in the request's unit of work, not the
group-commit engine (they are rare, and keeping them out keeps the hot path simple): load what
they correct, lock the card's accounts in the order every posting uses, and write one posting.
"""

import uuid
from collections.abc import Awaitable
from datetime import datetime
from typing import TypeVar

from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.deps import Principal
from app.cards.errors import CardClosed
from app.cards.upkeep import bring_up_to_date
from app.db.errors import violated_constraint
from app.db.session import driver_connection
from app.ledger import repository
from app.ledger.errors import DuplicateReference, TransactionNotFound
from app.models.enums import CardStatus
from app.programs.service import ProgramContext

_REFERENCE_INDEXES = {
    "uq_transactions_partner_reference",
    "uq_transactions_operator_reference",
    "uq_purchase_returns_partner_reference",
}
T = TypeVar("T")


async def original(
    conn: AsyncConnection, program: ProgramContext, principal: Principal, transaction_id: uuid.UUID
) -> Row[tuple[object, ...]]:
    """The transaction to correct. To a partner key, another partner's does not exist."""
    row = await repository.correction_target(conn, program.id, transaction_id)
    if row is None or (not principal.is_operator and row.partner_id != principal.partner_id):
        raise TransactionNotFound()
    return row


async def lock_open_card(
    conn: AsyncConnection,
    program: ProgramContext,
    card_id: int,
    card_number: str,
    status: str,
) -> list[Row[tuple[object, ...]]]:
    """The card's accounts, locked; refused if the card is closed (read from the locked
    accounts too, which are current even if `status` was read before a close committed)."""
    accounts = await _lock_releasing_lapsed(conn, program, card_id)
    if status == CardStatus.CLOSED or any(a.closed_at for a in accounts):
        raise CardClosed(f"Card {card_number} is closed.")
    return accounts


async def _lock_releasing_lapsed(
    conn: AsyncConnection, program: ProgramContext, card_id: int
) -> list[Row[tuple[object, ...]]]:
    """Lock the card's accounts; release its lapsed holds first if it has any, so the balances
    a correction starts from (and answers) are what the card really has available."""
    accounts = await repository.lock_card_accounts(conn, card_id)
    # Lapsed holds, matured pending points and due expiry first: a correction starts from what
    # the card really has (and due points expire before a clawback takes any, oldest first).
    if await bring_up_to_date(
        await driver_connection(conn),
        program,
        [card_id],
        holding=[card_id] if any(a.held for a in accounts) else [],
        pending=[card_id] if any(a.pending for a in accounts) else [],
    ):
        accounts = await repository.lock_card_accounts(conn, card_id)
    return accounts


async def lock_current_card(
    conn: AsyncConnection, program: ProgramContext, card_id: int
) -> tuple[int, str, list[Row[tuple[object, ...]]]]:
    """The accounts of the card that holds `card_id`'s value now (the card itself, or the one
    that replaced it or absorbed it in a merge), locked. Refunds and returns of a lost card's
    purchases land there. Refused if that card was closed without a successor."""
    while True:
        card = await repository.current_card(conn, card_id)
        accounts = await _lock_releasing_lapsed(conn, program, card.id)
        if card.status == CardStatus.CLOSED or any(a.closed_at for a in accounts):
            # Replaced while we waited for its lock (the accounts are current): follow again.
            if (await repository.current_card(conn, card.id)).id != card.id:
                continue
            raise CardClosed(f"Card {card.card_number} is closed.")
        return card.id, card.card_number, accounts


async def write(
    conn: AsyncConnection,
    transaction: dict[str, object],
    balances: dict[int, int],
    legs: list[tuple[int, str, int]],
) -> datetime:
    return await guard_reference(
        repository.write_posting(conn, transaction, balances, legs),
        transaction.get("reference"),
    )


async def guard_reference(statement: Awaitable[T], reference: object) -> T:
    """Run a statement that may hit a unique reference index (a receipt posted by a request
    that committed after our check): that becomes a duplicate_reference refusal."""
    try:
        return await statement
    except IntegrityError as exc:
        if violated_constraint(exc) not in _REFERENCE_INDEXES:
            raise
        err = DuplicateReference(f"Reference {reference!r} was already posted.")
        err.replayable = False  # the database transaction is aborted: nothing can be stored
        raise err from exc

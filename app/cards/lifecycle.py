"""The card's life beyond earning and spending: transfers between cards, replacement of a lost
card, merging two cards of one customer, closing. Operator only; each moves value, so each runs
under an Idempotency-Key.

Every operation locks the accounts of the cards involved in id order, the order every posting
locks them in, and closing marks the card's accounts closed under that lock: a posting that
waited for the lock sees the card closed (app/ledger/rules.py), even if it read the card row
before the close committed.
"""

import uuid
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.deps import Principal
from app.cards import repository
from app.cards import service as cards
from app.cards.errors import (
    CardClosed,
    CardHasBalance,
    CardNotFound,
    NotSameCustomer,
    SameCard,
)
from app.cards.schemas import (
    CardCreate,
    CardMerge,
    CardMerged,
    CardRead,
    CardReplace,
    CardReplaced,
    Moved,
)
from app.cards.upkeep import bring_up_to_date
from app.core.config import Settings
from app.core.ids import uuid7
from app.db.session import driver_connection
from app.expiry.service import move_lots
from app.holds import repository as holds
from app.ledger import corrections
from app.ledger import repository as ledger
from app.ledger.errors import DuplicateReference, InsufficientBalance
from app.ledger.schemas import CardBalances, TransferCreate, TransferRead
from app.models.enums import Asset, CardKind, CardStatus, TransactionType
from app.pending import repository as pending
from app.programs.service import ProgramContext
from app.rules import service as rules


@dataclass
class LockedCard:
    id: int
    card_number: str
    status: str
    kind: str
    customer_reference: str | None
    birth_date: date | None
    accounts: dict[str, int] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    """What open holds reserve (the value sits in the operator_held account)."""
    pending: dict[str, int] = field(default_factory=dict)
    """Points waiting out a return window (in the operator_pending account)."""
    closed: bool = False
    """From the locked accounts: current even when `status` was read before a close."""


async def _lock(
    conn: AsyncConnection, program: ProgramContext, numbers: list[str]
) -> dict[str, LockedCard]:
    """The cards, their accounts locked in id order. Their lapsed holds are released and their
    due points expired first, so what moves is what the cards really have available."""
    rows = await repository.lock_cards(conn, program.id, numbers)
    raw = await driver_connection(conn)
    # Expired points are never moved to another card; matured ones move as spendable.
    if await bring_up_to_date(
        raw,
        program,
        sorted({row.card_id for row in rows}),
        holding=sorted({row.card_id for row in rows if row.held}),
        pending=sorted({row.card_id for row in rows if row.pending}),
    ):
        rows = await repository.lock_cards(conn, program.id, numbers)
    found: dict[str, LockedCard] = {}
    for row in rows:
        card = found.setdefault(
            row.card_number,
            LockedCard(
                row.card_id,
                row.card_number,
                row.status,
                row.kind,
                row.customer_reference,
                row.birth_date,
            ),
        )
        card.accounts[row.asset] = row.account_id
        card.balances[row.asset] = row.balance
        card.held[row.asset] = row.held
        card.pending[row.asset] = row.pending
        card.closed = card.closed or row.closed_at is not None
    for number in numbers:
        if number not in found:
            raise CardNotFound(f"No card {number}.")
    return found


def _open(card: LockedCard) -> None:
    if card.status == CardStatus.CLOSED or card.closed:
        raise CardClosed(f"Card {card.card_number} is closed.")


async def _move(
    conn: AsyncConnection,
    program: ProgramContext,
    principal: Principal,
    source: LockedCard,
    target: LockedCard,
    amounts: dict[str, int],
    description: str,
    reference: str | None = None,
    *,
    whole: bool = False,
) -> uuid.UUID | None:
    """Move `amounts` (asset -> amount) from source to target in one transfer transaction.
    `whole`: everything the source has moves, with its holds (a replacement or a merge)."""
    legs = [(asset, amount) for asset, amount in amounts.items() if amount]
    if not legs:
        return None
    transaction_id = uuid7()
    if amounts.get(Asset.POINTS) and not whole:
        # The points take their lots (their expiry dates) along: the oldest the card has.
        await move_lots(await driver_connection(conn), source.id, target.id, amounts[Asset.POINTS])
    balances: dict[int, int] = {}
    posting_legs: list[tuple[int, str, int]] = []
    for asset, amount in legs:
        source.balances[asset] -= amount
        target.balances[asset] += amount
        for card, signed in ((source, -amount), (target, amount)):
            balances[card.accounts[asset]] = card.balances[asset]
            posting_legs.append((card.accounts[asset], asset, signed))
    await corrections.write(
        conn,
        {
            "id": transaction_id,
            "program_id": program.id,
            "type": TransactionType.TRANSFER.value,
            "card_id": source.id,
            "counterparty_card_id": target.id,
            "api_key_id": principal.api_key_id,
            "reference": reference,
            "description": description,
        },
        balances,
        posting_legs,
    )
    return transaction_id


async def transfer(
    conn: AsyncConnection, program: ProgramContext, principal: Principal, req: TransferCreate
) -> tuple[int, TransferRead]:
    if req.from_card_number == req.to_card_number:
        raise SameCard()
    if req.reference is not None and await ledger.operator_reference_exists(
        conn, program.id, "transfer", req.reference
    ):
        raise DuplicateReference(f"Reference {req.reference!r} was already posted.")
    locked = await _lock(conn, program, [req.from_card_number, req.to_card_number])
    source, target = locked[req.from_card_number], locked[req.to_card_number]
    _open(source)
    _open(target)
    available = source.balances[req.asset]
    if available < req.amount:
        raise InsufficientBalance(
            f"The card holds {available} {req.asset.value}; {req.amount} were asked for.",
            asset=req.asset.value,
            available=available,
            requested=req.amount,
        )
    transaction_id = await _move(
        conn,
        program,
        principal,
        source,
        target,
        {req.asset: req.amount},
        req.reason,
        req.reference,
    )
    assert transaction_id is not None
    return 201, TransferRead(
        transaction_id=transaction_id,
        from_card_number=source.card_number,
        to_card_number=target.card_number,
        asset=req.asset,
        amount=req.amount,
        reason=req.reason,
        reference=req.reference,
        from_balance=CardBalances(**source.balances),
        to_balance=CardBalances(**target.balances),
    )


async def replace(
    conn: AsyncConnection,
    program: ProgramContext,
    settings: Settings,
    principal: Principal,
    card_number: str,
    req: CardReplace,
) -> tuple[int, CardReplaced]:
    old = (await _lock(conn, program, [card_number]))[card_number]
    _open(old)
    issued = await cards.issue_card(
        conn,
        program,
        settings,
        principal,
        CardCreate(
            kind=CardKind(old.kind),
            customer_reference=old.customer_reference,
            card_number=req.card_number,
            birth_date=old.birth_date,
        ),
    )
    new = (await _lock(conn, program, [issued.card_number]))[issued.card_number]
    moved = dict(old.balances)
    # All its lots follow the value (before the balances move: they say what is covered).
    await move_lots(await driver_connection(conn), old.id, new.id, None)
    transaction_id = await _move(
        conn, program, principal, old, new, moved, f"card {old.card_number} replaced", whole=True
    )
    # Open holds, the tier and qualifying spend follow the value: the order can still be
    # captured, and the customer keeps their status.
    await holds.move_open(await driver_connection(conn), old.id, new.id)
    await pending.move_waiting(await driver_connection(conn), old.id, new.id)
    await rules.move_tier(conn, program, old.id, new.id)
    await repository.close(conn, old.id, replaced_by=new.id)
    return 201, CardReplaced(
        old_card=await cards.get_card(conn, program, old.card_number),
        new_card=await cards.get_card(conn, program, new.card_number),
        transaction_id=transaction_id,
        moved=Moved(**moved),
    )


async def merge(
    conn: AsyncConnection,
    program: ProgramContext,
    principal: Principal,
    card_number: str,
    req: CardMerge,
) -> tuple[int, CardMerged]:
    if card_number == req.into_card_number:
        raise SameCard()
    locked = await _lock(conn, program, [card_number, req.into_card_number])
    source, target = locked[card_number], locked[req.into_card_number]
    _open(source)
    _open(target)
    if (
        source.kind != CardKind.PERSONALIZED
        or target.kind != CardKind.PERSONALIZED
        or source.customer_reference != target.customer_reference
    ):
        raise NotSameCustomer()
    moved = dict(source.balances)
    await move_lots(await driver_connection(conn), source.id, target.id, None)
    transaction_id = await _move(
        conn,
        program,
        principal,
        source,
        target,
        moved,
        f"card {source.card_number} merged into {target.card_number}",
        whole=True,
    )
    await holds.move_open(await driver_connection(conn), source.id, target.id)
    await pending.move_waiting(await driver_connection(conn), source.id, target.id)
    await rules.move_tier(conn, program, source.id, target.id)
    await repository.close(conn, source.id, replaced_by=target.id)
    return 200, CardMerged(
        card=await cards.get_card(conn, program, target.card_number),
        merged_card=await cards.get_card(conn, program, source.card_number),
        transaction_id=transaction_id,
        moved=Moved(**moved),
    )


async def close(conn: AsyncConnection, program: ProgramContext, card_number: str) -> CardRead:
    card = (await _lock(conn, program, [card_number]))[card_number]
    _open(card)
    if any(card.balances.values()) or any(card.held.values()) or any(card.pending.values()):
        raise CardHasBalance(
            f"Card {card_number} holds {card.balances[Asset.POINTS]} points and "
            f"{card.balances[Asset.CASHBACK]} cashback, has {card.held[Asset.POINTS]} "
            f"points and {card.held[Asset.CASHBACK]} cashback on hold, and "
            f"{card.pending[Asset.POINTS]} points pending.",
        )
    await repository.close(conn, card.id, replaced_by=None)
    return await cards.get_card(conn, program, card_number)

"""Use cases of holds: create, capture, void, read. Each locks the card's accounts (in id order,
as every posting does) before reading the hold's state, so of a capture and a void racing on
one hold, the second to get the lock finds the hold no longer open."""

import uuid
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.deps import Principal
from app.cards.errors import CardBlocked, CardClosed, CardNotFound
from app.cards.upkeep import bring_up_to_date
from app.db.session import driver_connection
from app.expiry.service import expire_due
from app.holds import postings, repository
from app.holds.errors import CaptureExceedsHold, HoldExpired, HoldNotFound, HoldNotOpen
from app.holds.schemas import HoldAnswer, HoldCapture, HoldCreate, HoldRead, HoldVoid
from app.ledger.errors import DuplicateReference, InsufficientBalance, PartnerCannotRedeem
from app.ledger.rules import posting_partner
from app.ledger.schemas import CardBalances
from app.models.enums import AccountKind, Asset, CardStatus, HoldStatus
from app.partners.errors import PartnerNotFound
from app.programs.service import ProgramContext


def hold_read(row: Any) -> HoldRead:
    status = row["status"]
    if status == HoldStatus.OPEN and row["lapsed"]:
        status = HoldStatus.EXPIRED
    fields = {name: row[name] for name in HoldRead.model_fields if name != "status"}
    return HoldRead(**fields, status=status)


async def _answer(
    raw: asyncpg.Connection, program: ProgramContext, hold_id: uuid.UUID, released: int
) -> HoldAnswer:
    row = await repository.get(raw, program.id, hold_id)
    accounts = await repository.lock_cards(raw, [row["card_id"]])
    balance = CardBalances(**{a["asset"]: a["balance"] for a in accounts})
    return HoldAnswer(**hold_read(row).model_dump(), released=released, balance=balance)


async def get(
    conn: AsyncConnection, program: ProgramContext, principal: Principal, hold_id: uuid.UUID
) -> HoldRead:
    raw = await driver_connection(conn)
    return hold_read(await _visible(raw, program, principal, hold_id))


async def _visible(
    raw: asyncpg.Connection, program: ProgramContext, principal: Principal, hold_id: uuid.UUID
) -> asyncpg.Record:
    """The hold; to a partner key, another partner's does not exist."""
    row = await repository.get(raw, program.id, hold_id)
    if row is None or (not principal.is_operator and row["partner_id"] != principal.partner_id):
        raise HoldNotFound()
    return row


async def create(
    conn: AsyncConnection, program: ProgramContext, principal: Principal, req: HoldCreate
) -> tuple[int, HoldAnswer]:
    partner_id = posting_partner(principal, req.partner_id)
    raw = await driver_connection(conn)
    if partner_id is not None:
        partner = await repository.partner(raw, program.id, partner_id, req.asset.value)
        if partner is None:
            raise PartnerNotFound()
        if not partner["can_redeem"]:
            raise PartnerCannotRedeem()
    card = await repository.card(raw, program.id, req.card_number)
    if card is None:
        raise CardNotFound()
    accounts = await repository.lock_cards(raw, [card["id"]])
    if card["status"] == CardStatus.CLOSED or any(a["closed_at"] for a in accounts):
        raise CardClosed(f"Card {card['card_number']} is closed.")
    if card["status"] == CardStatus.BLOCKED:
        raise CardBlocked()
    if await repository.reference_taken(raw, program.id, partner_id, req.reference):
        raise DuplicateReference(f"Order {req.reference!r} already has a hold.")

    # Lapsed holds go back, pending points mature and due points expire first: what is left
    # is what can be held.
    if await _up_to_date(raw, program, card["id"], accounts):
        accounts = await repository.lock_cards(raw, [card["id"]])
    account = next(a for a in accounts if a["asset"] == req.asset)
    available = account["balance"]
    if req.amount > available:
        raise InsufficientBalance(
            f"The card has {available} {req.asset.value} available; {req.amount} were asked for.",
            asset=req.asset.value,
            available=available,
            requested=req.amount,
        )

    writes = repository.Writes()
    hold_id = postings.reserve(
        writes,
        program,
        card_id=card["id"],
        account_id=account["id"],
        asset=req.asset.value,
        amount=req.amount,
        partner_id=partner_id,
        api_key_id=principal.api_key_id,
        reference=req.reference,
        ttl_seconds=req.ttl_seconds,
    )
    try:
        await repository.write(raw, program.id, writes)
    except asyncpg.UniqueViolationError as exc:
        # An order held by a request that committed after our check.
        err = DuplicateReference(f"Order {req.reference!r} already has a hold.")
        err.replayable = False  # the database transaction is aborted: nothing can be stored
        raise err from exc
    return 201, await _answer(raw, program, hold_id, released=0)


async def _lock_hold(
    raw: asyncpg.Connection, program: ProgramContext, principal: Principal, hold_id: uuid.UUID
) -> asyncpg.Record:
    """The hold, reread after locking its card's accounts (a replacement may move it to another
    card meanwhile: then lock that one too)."""
    hold = await _visible(raw, program, principal, hold_id)
    while True:
        accounts = await repository.lock_cards(raw, [hold["card_id"]])
        current = await repository.get(raw, program.id, hold_id)
        if current["card_id"] == hold["card_id"]:
            break
        hold = current
    if current["status"] != HoldStatus.OPEN:
        raise HoldNotOpen(
            f"The hold is {current['status']}.",
            hold_status=current["status"],
            settled_by=str(current["settled_by"]),
        )
    if current["lapsed"]:
        raise HoldExpired(f"The hold expired at {current['expires_at'].isoformat()}.")
    # The card's other lapsed holds go back first, so the answer's balance is what the card
    # really has available (this hold is open and current: it stays).
    await _up_to_date(raw, program, current["card_id"], accounts)
    return current


async def _up_to_date(
    raw: asyncpg.Connection, program: ProgramContext, card_id: int, accounts: list[Any]
) -> bool:
    """bring_up_to_date for one card, from its locked accounts."""
    return await bring_up_to_date(
        raw,
        program,
        [card_id],
        holding=[card_id] if any(a["held"] for a in accounts) else [],
        pending=[card_id] if any(a["pending"] for a in accounts) else [],
    )


async def capture(
    conn: AsyncConnection,
    program: ProgramContext,
    principal: Principal,
    hold_id: uuid.UUID,
    req: HoldCapture,
) -> tuple[int, HoldAnswer]:
    raw = await driver_connection(conn)
    hold = await _lock_hold(raw, program, principal, hold_id)
    amount = hold["amount"] if req.amount is None else req.amount
    if amount > hold["amount"]:
        raise CaptureExceedsHold(
            f"The hold reserved {hold['amount']}; {amount} were asked for.",
            held=hold["amount"],
            requested=amount,
        )
    asset = Asset(hold["asset"])
    if hold["partner_id"] is None:
        counter = program.operator_account(AccountKind.OPERATOR_REDEEMED, asset)
    else:
        counter = (await repository.partner(raw, program.id, hold["partner_id"], asset.value))[
            "redeemed_account"
        ]
    writes = repository.Writes()
    postings.settle_captured(
        writes,
        program,
        hold,
        amount,
        counter,
        api_key_id=principal.api_key_id,
        description=req.reason,
    )
    await repository.write(raw, program.id, writes)
    # What the hold gives back may be due (its lot's day came while it was held).
    await expire_due(raw, program, [hold["card_id"]])
    return 200, await _answer(raw, program, hold_id, released=hold["amount"] - amount)


async def void(
    conn: AsyncConnection,
    program: ProgramContext,
    principal: Principal,
    hold_id: uuid.UUID,
    req: HoldVoid,
) -> tuple[int, HoldAnswer]:
    raw = await driver_connection(conn)
    hold = await _lock_hold(raw, program, principal, hold_id)
    writes = repository.Writes()
    postings.settle_released(
        writes,
        program,
        hold,
        HoldStatus.VOIDED,
        api_key_id=principal.api_key_id,
        description=req.reason or "hold voided",
    )
    await repository.write(raw, program.id, writes)
    await expire_due(raw, program, [hold["card_id"]])
    return 200, await _answer(raw, program, hold_id, released=hold["amount"])

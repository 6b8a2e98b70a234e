"""What each step of a hold's life posts, as pure functions adding to a `Writes`.

  hold:     card account -A            operator_held +A     (card's held +A)
  capture:  operator_held -X           partner_redeemed +X  (card's held -X)
  release:  operator_held -R           card account +R      (card's held -R)

A capture of part of a hold is followed by a release of the rest, in the same database
transaction; a void or an expiry is a release of all of it."""

import uuid
from typing import Any

from app.core.ids import uuid7
from app.holds.repository import Writes
from app.models.enums import AccountKind, Asset, HoldStatus, TransactionType
from app.programs.service import ProgramContext


def held_account(program: ProgramContext, asset: str) -> int:
    return program.operator_account(AccountKind.OPERATOR_HELD, Asset(asset))


def reserve(
    writes: Writes,
    program: ProgramContext,
    *,
    card_id: int,
    account_id: int,
    asset: str,
    amount: int,
    partner_id: uuid.UUID | None,
    api_key_id: uuid.UUID,
    reference: str,
    ttl_seconds: int,
) -> uuid.UUID:
    hold_id = uuid7()
    writes.transactions.append(
        (
            hold_id,
            TransactionType.HOLD.value,
            card_id,
            partner_id,
            api_key_id,
            reference,
            None,
            None,
        )
    )
    writes.entries += [
        (hold_id, account_id, asset, -amount),
        (hold_id, held_account(program, asset), asset, amount),
    ]
    writes.move(account_id, balance=-amount, held=amount)
    writes.created.append(
        (
            hold_id,
            card_id,
            account_id,
            partner_id,
            api_key_id,
            asset,
            amount,
            reference,
            ttl_seconds,
        )
    )
    return hold_id


def _posting(
    writes: Writes,
    type: TransactionType,
    hold: Any,
    api_key_id: uuid.UUID | None,
    description: str | None,
) -> uuid.UUID:
    transaction_id = uuid7()
    writes.transactions.append(
        (
            transaction_id,
            type.value,
            hold["card_id"],
            hold["partner_id"],
            api_key_id,
            None,
            description,
            hold["id"],
        )
    )
    return transaction_id


def release(
    writes: Writes,
    program: ProgramContext,
    hold: Any,
    amount: int,
    *,
    api_key_id: uuid.UUID | None,
    description: str,
) -> uuid.UUID:
    """Give `amount` of the hold back to the card (the caller settles the hold)."""
    transaction_id = _posting(writes, TransactionType.RELEASE, hold, api_key_id, description)
    asset = hold["asset"]
    writes.entries += [
        (transaction_id, held_account(program, asset), asset, -amount),
        (transaction_id, hold["account_id"], asset, amount),
    ]
    writes.move(hold["account_id"], balance=amount, held=-amount)
    return transaction_id


def settle_released(
    writes: Writes,
    program: ProgramContext,
    hold: Any,
    status: HoldStatus,
    *,
    api_key_id: uuid.UUID | None,
    description: str,
) -> uuid.UUID:
    """A void or an expiry: all of the hold goes back to the card."""
    transaction_id = release(
        writes, program, hold, hold["amount"], api_key_id=api_key_id, description=description
    )
    writes.settled.append((hold["id"], status.value, None, transaction_id))
    return transaction_id


def settle_captured(
    writes: Writes,
    program: ProgramContext,
    hold: Any,
    amount: int,
    counter_account: int,
    *,
    api_key_id: uuid.UUID,
    description: str | None,
) -> tuple[uuid.UUID, uuid.UUID | None]:
    """`amount` is spent at the hold's partner; the rest goes back to the card."""
    capture_id = _posting(writes, TransactionType.CAPTURE, hold, api_key_id, description)
    asset = hold["asset"]
    writes.entries += [
        (capture_id, held_account(program, asset), asset, -amount),
        (capture_id, counter_account, asset, amount),
    ]
    writes.move(hold["account_id"], balance=0, held=-amount)
    rest = hold["amount"] - amount
    release_id = None
    if rest:
        release_id = release(
            writes, program, hold, rest, api_key_id=api_key_id, description="rest of the hold"
        )
    writes.settled.append((hold["id"], HoldStatus.CAPTURED.value, amount, capture_id))
    return capture_id, release_id

"""Posting expiry: what is due on locked cards goes to the breakage account, one `expiry`
transaction per card.

Expired points stop counting at once, whether or not anything posted them yet:
- the balance read leaves out what is due (app/ledger/service.py);
- anything that locks a card to move value first expires what is due on it, in its own
  database transaction (the posting engine, corrections, holds, the card's life), so a spend
  can never use points that had expired;
- the run (run.py) posts the rest, so breakage shows in the ledger even for cards never used
  again, and applies the inactivity rule.
Running twice, or concurrently, expires nothing twice: what is due is computed under the card's
lock from its balance, and after an expiry nothing more is due.
"""

from datetime import date, datetime
from typing import Any

import asyncpg

from app.core.ids import uuid7
from app.expiry import repository
from app.expiry.policy import Lot, covered, due, taken_oldest_first
from app.holds import repository as postings
from app.models.enums import AccountKind, Asset, TransactionType
from app.programs.service import ProgramContext

EXPIRED = "points expired"
INACTIVE = "points expired: no activity on the card"


def lots_of(row: Any) -> list[Lot]:
    return [
        Lot(earned_on=e, expires_on=x, amount=a)
        for e, x, a in zip(row["earned"], row["expires"], row["amounts"], strict=True)
    ]


async def expire_due(
    conn: asyncpg.Connection,
    program: ProgramContext,
    card_ids: list[int],
    *,
    inactive_since: datetime | None = None,
) -> dict[int, int]:
    """Expire what is due on these cards, whose accounts the caller has locked. Returns what
    each card points account's balance lost (negative amounts)."""
    rows = await repository.due_on_cards(conn, program.timezone, card_ids, inactive_since)
    if not rows:
        return {}
    writes = postings.Writes()
    settled: list[int] = []
    breakage = program.operator_account(AccountKind.OPERATOR_BREAKAGE, Asset.POINTS)
    for row in rows:
        lots = lots_of(row)
        today: date = row["today"]
        amount = due(row["balance"], row["held"], lots, today, inactive=row["inactive"])
        left = row["balance"] + row["held"] - amount
        if not any(
            lot.expires_on is not None and lot.expires_on <= today for lot, _ in covered(lots, left)
        ):
            settled.append(row["card_id"])
        if amount == 0:
            continue
        transaction_id = uuid7()
        description = INACTIVE if row["inactive"] else EXPIRED
        writes.transactions.append(
            (
                transaction_id,
                TransactionType.EXPIRY.value,
                row["card_id"],
                None,
                None,
                None,
                description,
                None,
            )
        )
        writes.entries += [
            (transaction_id, row["account_id"], Asset.POINTS.value, -amount),
            (transaction_id, breakage, Asset.POINTS.value, amount),
        ]
        writes.move(row["account_id"], balance=-amount, held=0)
    if writes.transactions:
        await postings.write(conn, program.id, writes)
    if settled:
        await repository.drop_spent(conn, program.timezone, settled)
    return {account: delta[0] for account, delta in writes.deltas.items()}


async def move_lots(
    conn: asyncpg.Connection, source_card_id: int, target_card_id: int, points: int | None
) -> None:
    """Points moving from one card to another (both locked, balances not yet moved) take
    their lots with them: the oldest the source still has. None: all of its lots (a
    replacement or a merge, which also moves the open holds)."""
    rows = await repository.lots(conn, source_card_id)
    if not rows:
        return
    lots = [Lot(r["earned_on"], r["expires_on"], r["amount"]) for r in rows]
    total = rows[0]["total"]
    if points is None:
        # The card's whole history goes, spent lots too: a refund of an earlier spend lands
        # on the new card and is covered there as it would have been here.
        taken = [(lot, lot.amount) for lot in lots]
    else:
        taken = taken_oldest_first(lots, total, points)
    if taken:
        await repository.move(
            conn,
            source_card_id,
            target_card_id,
            [(lot.earned_on, lot.expires_on, part) for lot, part in taken],
        )

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

import uuid
from datetime import date, datetime
from typing import Any

import asyncpg

from app.core.ids import uuid7
from app.expiry import repository
from app.expiry.policy import NEVER, Lot, covered, due
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
    cohorts: list[tuple[uuid.UUID, date, int]] = []
    breakage = program.operator_account(AccountKind.OPERATOR_BREAKAGE, Asset.POINTS)
    for row in rows:
        lots = lots_of(row)
        today: date = row["today"]
        # Points on hold or pending are the card's too: they are covered by its lots.
        amount = due(row["balance"], row["reserved"], lots, today, inactive=row["inactive"])
        left = row["balance"] + row["reserved"] - amount
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
        cohorts += [
            (transaction_id, month, points)
            for month, points in _cohorts(lots, row["balance"] + row["reserved"], amount, today)
        ]
    if writes.transactions:
        await postings.write(conn, program.id, writes)
        await repository.expired_cohorts(conn, cohorts)
    if settled:
        await repository.drop_spent(conn, program.timezone, settled)
    return {account: delta[0] for account, delta in writes.deltas.items()}


def _cohorts(lots: list[Lot], total: int, amount: int, today: date) -> list[tuple[date, int]]:
    """The months `amount` expiring points were earned in: the oldest parts the card covers,
    first those whose day came (an inactive card's others after them). Points no lot
    accounts for have no month."""
    parts = list(reversed(covered(lots, total)))
    parts.sort(key=lambda part: part[0].alive_on(today))  # stable: due ones first, oldest first
    months: dict[date, int] = {}
    left = amount
    for lot, part in parts:
        if left <= 0:
            break
        take = min(part, left)
        month = lot.earned_on.replace(day=1)
        months[month] = months.get(month, 0) + take
        left -= take
    return sorted(months.items())


async def move_lots(
    conn: asyncpg.Connection, source_card_id: int, target_card_id: int, points: int | None
) -> None:
    """Points moving from one card to another (both locked, balances not yet moved) take
    their lots with them: the oldest the source still has. None: all it has (a replacement or
    a merge, which also moves the open holds and pending points).

    Both cards keep only the lots their points still cover, first: a lot already spent on
    either card would otherwise be counted as the moved points' (the newest lots count
    first). The cost: points later given back to them by a refund of an earlier spend have no
    lot, and never expire."""
    source = await _covered_lots(conn, source_card_id)
    target = await _covered_lots(conn, target_card_id)
    total = sum(source.values())
    moving = total if points is None else min(points, total)
    oldest_first = sorted(source, key=lambda key: (key[1] or NEVER, key[0]))
    for key in oldest_first:
        if moving <= 0:
            break
        part = min(source[key], moving)
        source[key] -= part
        target[key] = target.get(key, 0) + part
        moving -= part
    for card_id, lots in ((source_card_id, source), (target_card_id, target)):
        await repository.replace_lots(
            conn, card_id, [(earned, expires, n) for (earned, expires), n in lots.items() if n]
        )


async def _covered_lots(
    conn: asyncpg.Connection, card_id: int
) -> dict[tuple[date, date | None], int]:
    """(earned_on, expires_on) -> the part of that lot the card's points cover."""
    rows = await repository.lots(conn, card_id)
    if not rows:
        return {}
    lots = [Lot(r["earned_on"], r["expires_on"], r["amount"]) for r in rows]
    return {(lot.earned_on, lot.expires_on): part for lot, part in covered(lots, rows[0]["total"])}

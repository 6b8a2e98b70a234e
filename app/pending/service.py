"""Pending points: what a purchase at a partner with a return window earned in points waits in
the operator_pending account until `spendable_at` (the purchase's time plus the window); the
card account's `pending` column counts it.

  purchase:  partner_issued -P        operator_pending +P   (card's pending +P)
  maturity:  operator_pending -R      card account +R       (card's pending -R)
  return:    operator_pending -X      partner_issued +X     (the purchase's pending first)

Matured points count as spendable at once, whether or not anything released them yet:
- the balance read adds them to what is available;
- anything that locks a card to move value first releases them (the posting engine,
  corrections, holds, the card's life);
- the release run posts the rest (`pending_release_seconds`, `loyalty-ledger release-pending`),
  so each maturity shows in the card's history. Concurrent runs are safe: each rereads under
  the card locks, and a purchase's points are released once.
"""

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.ids import uuid7
from app.holds import repository as holds
from app.models.enums import AccountKind, Asset
from app.pending import repository
from app.programs.service import ProgramContext


def pending_account(program: ProgramContext) -> int:
    return program.operator_account(AccountKind.OPERATOR_PENDING, Asset.POINTS)


async def release_matured(
    conn: asyncpg.Connection, program: ProgramContext, card_ids: list[int]
) -> dict[int, int]:
    """Release the matured points of these cards, whose accounts the caller has locked.
    Returns what each card points account's balance gained."""
    matured = await repository.matured_on_cards(conn, card_ids)
    if not matured:
        return {}
    await repository.release(
        conn,
        program.id,
        pending_account(program),
        [
            (r["id"], uuid7(), r["card_id"], r["account_id"], r["remaining"], r["partner_id"])
            for r in matured
        ],
    )
    gained: dict[int, int] = {}
    for r in matured:
        gained[r["account_id"]] = gained.get(r["account_id"], 0) + r["remaining"]
    return gained


async def release_run(engine: AsyncEngine, program: ProgramContext, page: int = 200) -> int:
    """Release every card's matured points, a page of cards per database transaction.
    Returns how many cards had points released."""
    released = 0
    while True:
        async with engine.connect() as conn:
            raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
            async with raw.transaction():
                cards = await repository.matured_cards(raw, program.id, page)
                if not cards:
                    return released
                await holds.lock_cards(raw, cards)
                released += len(await release_matured(raw, program, cards))

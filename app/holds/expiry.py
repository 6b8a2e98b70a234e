"""A hold past its time to live no longer counts, whether or not anything has released it yet:

- reads add lapsed holds back to what is available (app/ledger/hot_repository.py);
- anything that locks a card to move value first releases the card's lapsed holds, in its own
  database transaction (the posting engine, new holds, the card's life);
- the sweep releases the rest, so the release shows in the card's history even if the card is
  never used again. It runs in every service process (`hold_sweep_seconds`) and as
  `loyalty-ledger sweep-holds`; concurrent sweeps are safe: each rereads the holds after
  locking their cards, and a hold is released once.
"""

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from app.holds import postings, repository
from app.models.enums import HoldStatus
from app.programs.service import ProgramContext

EXPIRED = "hold expired"


async def release_lapsed(
    conn: asyncpg.Connection, program: ProgramContext, card_ids: list[int]
) -> tuple[int, dict[int, int]]:
    """Release the lapsed holds of these cards, whose accounts the caller has locked.
    Returns how many were released, and what each card account's balance gained."""
    lapsed = [h for h in await repository.open_on_cards(conn, card_ids) if h["lapsed"]]
    if not lapsed:
        return 0, {}
    writes = repository.Writes()
    for hold in lapsed:
        postings.settle_released(
            writes, program, hold, HoldStatus.EXPIRED, api_key_id=None, description=EXPIRED
        )
    await repository.write(conn, program.id, writes)
    return len(lapsed), {account: delta[0] for account, delta in writes.deltas.items()}


async def sweep(engine: AsyncEngine, program: ProgramContext, page: int = 200) -> int:
    """Release every lapsed hold, a page of cards per database transaction. Returns how many
    holds were released."""
    released = 0
    while True:
        async with engine.connect() as conn:
            raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
            async with raw.transaction():
                cards = await repository.lapsed_cards(raw, program.id, page)
                if not cards:
                    return released
                await repository.lock_cards(raw, cards)
                count, _ = await release_lapsed(raw, program, cards)
                released += count

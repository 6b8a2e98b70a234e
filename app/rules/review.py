"""The tier review: every open card with a tier, or with qualifying spend, gets the tier its
spend reaches now.
Purchases move cards up at once; this is what moves them down (spend that left the window,
returns), and what applies a new ladder to cards that bought nothing since. Run it daily:
`loyalty-ledger tiers`, or in the service (`TIER_REVIEW_SECONDS`).

A page of cards per database transaction, their accounts locked in id order (as every posting
locks them), so a purchase moving a card up and the review never overwrite each other."""

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.programs.service import ProgramContext
from app.rules import repository
from app.rules.tiers import Ladder

PAGE = text("""
    SELECT id FROM cards c
    WHERE program_id = :program_id AND status <> 'closed' AND id > :after
      AND (tier IS NOT NULL OR EXISTS (SELECT 1 FROM card_spend s WHERE s.card_id = c.id))
    ORDER BY id LIMIT :limit
""")

LOCK = text("""
    SELECT id FROM accounts WHERE card_id = ANY(CAST(:cards AS bigint[]))
    ORDER BY id FOR NO KEY UPDATE
""")


async def review(engine: AsyncEngine, program: ProgramContext, page: int = 500) -> int:
    """Returns how many cards changed tier."""
    async with engine.connect() as conn:
        row = await repository.current_ladder(conn, program.id)
    if row is None:
        return 0
    ladder = Ladder.from_stored(row.version, row.window_months, row.tiers)
    moved, after = 0, 0
    while True:
        async with engine.begin() as conn:
            params = {"program_id": program.id, "after": after, "limit": page}
            cards = [r.id for r in await conn.execute(PAGE, params)]
            if not cards:
                return moved
            after = cards[-1]
            await conn.execute(LOCK, {"cards": cards})
            for card in await repository.card_tiers(conn, cards, ladder.window_months):
                reached = ladder.reached(card.spend)
                if reached.code != card.tier:
                    await repository.set_tier(conn, card.id, reached.code)
                    moved += 1

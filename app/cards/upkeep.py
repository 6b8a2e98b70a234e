"""What happens to a card with time alone, brought up to date before anything moves its value:
holds past their time to live go back, pending points past their return window become
spendable, and then points past their expiry go (in that order: what the first two give back
may be due). The posting engine does the same from flags in its context statement
(app/ledger/engine.py); everything else that locks a card calls this."""

import asyncpg

from app.expiry.service import expire_due
from app.holds.expiry import release_lapsed
from app.pending.service import release_matured
from app.programs.service import ProgramContext


async def bring_up_to_date(
    conn: asyncpg.Connection,
    program: ProgramContext,
    card_ids: list[int],
    *,
    holding: list[int],
    pending: list[int],
) -> bool:
    """For cards whose accounts the caller has locked. `holding` and `pending`: those of
    them whose locked accounts show something held or pending (only they can have a hold to
    release or points to mature: the others cost no query). True if any balance changed."""
    released = matured = None
    if holding:
        released, _ = await release_lapsed(conn, program, holding)
    if pending:
        matured = await release_matured(conn, program, pending)
    expired = await expire_due(conn, program, card_ids)
    return bool(released or matured or expired)

"""Idempotency records are kept for `IDEMPOTENCY_RETENTION_DAYS` (30 by default), then purged:
a till retries within minutes, an offline batch within days, never after a month. A request
sent again with a purged key runs afresh (a receipt reference still posts only once).

The purge deletes a page of the oldest records per statement, so it never holds many row
locks or a long transaction; it runs in every service process (`IDEMPOTENCY_PURGE_SECONDS`)
and as `loyalty-ledger purge-idempotency`."""

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.programs.service import ProgramContext

PURGE_PAGE = text("""
    DELETE FROM idempotency_keys
    WHERE (api_key_id, key) IN (
        SELECT i.api_key_id, i.key FROM idempotency_keys i
        JOIN api_keys k ON k.id = i.api_key_id AND k.program_id = :program_id
        WHERE i.created_at < now() - make_interval(days => :days)
        ORDER BY i.created_at LIMIT :page
    )
""")


async def purge(engine: AsyncEngine, program: ProgramContext, days: int, page: int = 5_000) -> int:
    """Delete the program's idempotency records older than `days`; returns how many."""
    purged = 0
    while True:
        async with engine.begin() as conn:
            params = {"program_id": program.id, "days": days, "page": page}
            deleted = (await conn.execute(PURGE_PAGE, params)).rowcount
        purged += deleted
        if deleted < page:
            return purged

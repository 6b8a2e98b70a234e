"""Batches: many postings in one request (an offline till's day, an import of web orders),
posted by the same set-based engine as single requests, in the request's own transaction."""

from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection

from app.batches.errors import BatchRefused
from app.batches.schemas import BatchCreate
from app.core.config import Settings
from app.core.errors import RetryLater
from app.ledger.engine import GroupItem, RetryGroup, post_group
from app.programs.service import ProgramContext


async def post_batch(
    conn: AsyncConnection,
    program: ProgramContext,
    settings: Settings,
    key_hash: bytes,
    req: BatchCreate,
) -> tuple[int, dict[str, Any]]:
    """The answer is a plain dict in the shape of BatchRead, which documents it: a thousand
    nested pydantic models per batch cost more than posting it."""
    raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
    items = [GroupItem(request=item, key_hash=key_hash) for item in req.items]
    try:
        outcomes = await post_group(raw, program, settings, items, atomic=req.atomic)
    except RetryGroup as exc:
        raise RetryLater("Another request posted one of these references meanwhile.") from exc
    results = [
        {
            "index": index,
            "reference": item.reference,
            "status": outcome.status,
            "result": outcome.payload if outcome.status < 300 else None,
            "problem": outcome.problem,
        }
        for index, (item, outcome) in enumerate(zip(req.items, outcomes, strict=True))
    ]
    posted = sum(1 for outcome in outcomes if outcome.posted)
    refused = sum(1 for outcome in outcomes if outcome.status >= 400 and outcome.status != 424)
    batch = {"atomic": req.atomic, "posted": posted, "refused": refused, "items": results}
    if req.atomic and refused:
        raise BatchRefused(
            f"{refused} of {len(results)} items were refused; nothing was posted.", **batch
        )
    return 200, batch

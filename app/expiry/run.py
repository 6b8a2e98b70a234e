"""The expiry run: `loyalty-ledger expire`, and every `expiry_run_seconds` in each service
process. A page of cards per database transaction, in card id order; each page locks its
cards, releases their lapsed holds (what they release may be due) and expires what is due."""

from datetime import UTC, datetime

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.expiry import repository
from app.expiry.service import expire_due
from app.holds import repository as holds
from app.holds.expiry import release_lapsed
from app.programs.service import ProgramContext


def inactive_since(settings: Settings, now: datetime) -> datetime | None:
    """Cards with no activity since this moment lose their points (None: no such rule)."""
    months = settings.points_inactivity_months
    if not months:
        return None
    month = now.month - 1 - months
    year = now.year + month // 12
    month = month % 12 + 1
    day = min(now.day, _days_in(year, month))
    return now.replace(year=year, month=month, day=day)


def _days_in(year: int, month: int) -> int:
    following = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return (following - datetime(year, month, 1, tzinfo=UTC)).days


async def run(
    engine: AsyncEngine,
    program: ProgramContext,
    settings: Settings,
    page: int = 200,
    *,
    now: datetime | None = None,
) -> tuple[int, int]:
    """Expire what is due on every card. Returns (cards whose points expired, points).
    `now` (tests) moves the inactivity rule's clock; lots always go by the database's."""
    since = inactive_since(settings, now or datetime.now(UTC))
    cards = points = 0
    for inactivity in (False, True):
        if inactivity and since is None:
            break
        after = 0
        while True:
            async with engine.connect() as conn:
                raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
                async with raw.transaction():
                    if inactivity:
                        assert since is not None
                        found = await repository.inactive_cards(raw, program.id, after, since, page)
                    else:
                        found = await repository.cards_with_lots_due(
                            raw, program.id, program.timezone, after, page
                        )
                    if not found:
                        break
                    await holds.lock_cards(raw, found)
                    await release_lapsed(raw, program, found)
                    lost = await expire_due(raw, program, found, inactive_since=since)
                    cards += len(lost)
                    points -= sum(lost.values())
                    after = found[-1]
    return cards, points


async def points_expired(engine: AsyncEngine, program: ProgramContext, settings: Settings) -> int:
    """The run, for the periodic job (which logs one number)."""
    return (await run(engine, program, settings))[1]

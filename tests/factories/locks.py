"""Deterministic interleavings: a transaction of the test holds a card's account locks while
requests queue behind it; when it commits, the first waiter commits its change and the next
one must see it, although its statement began before that change was committed."""

import asyncio
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_LOCK_ACCOUNTS = text("""
    SELECT a.id FROM accounts a JOIN cards c ON c.id = a.card_id
    WHERE c.card_number = :n ORDER BY a.id FOR NO KEY UPDATE OF a
""")

_LOCK_WAITERS = text("""
    SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock'
""")


async def _wait_for_lock_waiters(engine: AsyncEngine, n: int) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        async with engine.connect() as conn:
            waiting = int((await conn.execute(_LOCK_WAITERS)).scalar_one())
        if waiting >= n:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{waiting} of {n} waiters"
        await asyncio.sleep(0.02)


async def queued_behind_lock(engine: AsyncEngine, card_number: str, *requests: Any) -> list[Any]:
    """Start `requests` one after another, each once the one before waits for the lock of the
    card's accounts that the test holds; then let them go, in that order."""
    tasks: list[asyncio.Task[Any]] = []
    async with engine.connect() as holder:
        await holder.begin()
        assert len((await holder.execute(_LOCK_ACCOUNTS, {"n": card_number})).all()) == 2
        try:
            for i, request in enumerate(requests, start=1):
                tasks.append(asyncio.ensure_future(request))
                await _wait_for_lock_waiters(engine, i)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        await holder.commit()
    return list(await asyncio.wait_for(asyncio.gather(*tasks), timeout=20))

"""Group commit: concurrent posting requests share one database transaction.

Each request waits on a future; a few executor tasks per process take whatever requests are
queued (up to `max_group`) and post them together with the set-based engine, then commit and
answer all of them. Under load, one BEGIN, six statements and one COMMIT (one WAL flush) serve
a whole group; with a single request in flight it is a group of one, with no added wait.

A 2xx still means durable: a future is resolved only after its group committed. If a group
fails for a reason a rerun fixes (a receipt reference committed meanwhile, a deadlock), it is
rerun; if it fails otherwise, each request is retried alone, so one bad request cannot take
its neighbours down with it.
"""

import asyncio
import logging
from collections.abc import Sequence

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.errors import RetryLater
from app.ledger.engine import GroupItem, Outcome, RetryGroup, post_group, refusal
from app.programs.service import ProgramContext

logger = logging.getLogger(__name__)

_RERUNS = 3


async def run_group(
    engine: AsyncEngine,
    program: ProgramContext,
    settings: Settings,
    items: Sequence[GroupItem],
) -> list[Outcome]:
    """One group in its own transaction, rerun when the database asks for it."""
    for _ in range(_RERUNS):
        try:
            async with engine.connect() as conn:
                # The transaction is asyncpg's own: SQLAlchemy only begins one lazily, at its
                # first statement, and the group runs no SQLAlchemy statement.
                raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
                async with raw.transaction():
                    return await post_group(raw, program, settings, items)
        except RetryGroup:
            continue
    return [refusal(RetryLater()) for _ in items]


class PostingBatcher:
    def __init__(
        self,
        engine: AsyncEngine,
        program: ProgramContext,
        settings: Settings,
        *,
        executors: int,
        max_group: int,
    ) -> None:
        self.engine = engine
        self.program = program
        self.settings = settings
        self.max_group = max_group
        self.queue: asyncio.Queue[tuple[GroupItem, asyncio.Future[Outcome]]] = asyncio.Queue()
        self.tasks = [asyncio.create_task(self._executor()) for _ in range(executors)]

    async def submit(self, item: GroupItem) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((item, future))
        return await future

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _executor(self) -> None:
        while True:
            group = [await self.queue.get()]
            while len(group) < self.max_group and not self.queue.empty():
                group.append(self.queue.get_nowait())
            await self._run([item for item, _ in group], [future for _, future in group])

    async def _run(self, items: list[GroupItem], futures: list[asyncio.Future[Outcome]]) -> None:
        try:
            outcomes = await run_group(self.engine, self.program, self.settings, items)
        except Exception as exc:
            if len(items) > 1:
                # Find the culprit: every request gets its own transaction and its own fate.
                for item, future in zip(items, futures, strict=True):
                    await self._run([item], [future])
                return
            logger.exception("posting failed", exc_info=exc)
            if not futures[0].done():
                futures[0].set_exception(exc)
            return
        for future, outcome in zip(futures, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)

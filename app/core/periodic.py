"""Background jobs in the service process: run a job every so many seconds until cancelled.
A failure is logged and the job runs again next time; each job is safe to run in several
processes at once (they lock what they change)."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def run_every(name: str, seconds: float, job: Callable[[], Awaitable[int]]) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            count = await job()
            if count:
                log.info("%s: %d", name, count)
        except Exception:
            log.exception("%s failed; retrying in %s s", name, seconds)

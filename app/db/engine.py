"""The connection pool. One per process, created at startup and disposed at shutdown."""

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.core.config import Settings
from app.db.urls import async_url


def create_engine(database_url: str, settings: Settings) -> AsyncEngine:
    return create_async_engine(
        async_url(database_url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=False,
        # Every request runs in an explicit transaction opened by the unit of work.
        connect_args={
            "server_settings": {
                "application_name": "loyalty-ledger",
                # Prepared statements (asyncpg caches every one) plan once per connection.
                # Left to choose, PostgreSQL kept planning the posting engine's context
                # statement afresh on every execution: 5 ms a group where the generic plan
                # runs in 1.2 ms (bench/ANALYSIS.md). Every statement here probes by keys, so
                # the parameter values never change the best plan.
                "plan_cache_mode": "force_generic_plan",
            }
        },
    )

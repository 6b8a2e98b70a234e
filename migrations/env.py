"""Alembic environment: async engine, URL from the caller or DATABASE_URL."""

import asyncio
import os

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.urls import async_url
from app.models import Base

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("Set DATABASE_URL, or run `loyalty-ledger migrate`.")
    return str(url)


def run_migrations_offline() -> None:
    context.configure(
        url=str(async_url(_database_url())),
        target_metadata=target_metadata,
        literal_binds=True,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection, target_metadata=target_metadata, transactional_ddl=True
    )
    with context.begin_transaction():
        # Never queue behind a long transaction holding a lock we need: fail fast and retry
        # the deploy instead of blocking every request behind us.
        connection.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_async_engine(async_url(_database_url()), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())

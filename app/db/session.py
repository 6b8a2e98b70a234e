"""The unit of work: one database transaction per request, committed in one place.

The dependency opens a connection and a transaction; the route and services only execute
statements. On success the transaction commits *before* the response is sent (the dependency
has function scope), so a 2xx means the write is durable; any exception rolls everything back.
"""

from collections.abc import AsyncIterator
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


async def get_conn(request: Request) -> AsyncIterator[AsyncConnection]:
    engine: AsyncEngine = request.app.state.engine
    async with engine.connect() as conn, conn.begin():
        yield conn


Conn = Annotated[AsyncConnection, Depends(get_conn, scope="function")]


async def driver_connection(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection beneath `conn`, for SQL shared with the raw-asyncpg hot path.

    Its statements join the unit of work's transaction only once SQLAlchemy has begun it, which
    SQLAlchemy does lazily, at its first statement (a request's is the API key lookup)."""
    raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
    if not raw.is_in_transaction():
        raise RuntimeError("no database transaction begun yet: run a statement through SQLAlchemy")
    return raw

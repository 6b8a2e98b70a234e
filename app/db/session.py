"""The unit of work: one database transaction per request, committed in one place.

The dependency opens a connection and a transaction; the route and services only execute
statements. On success the transaction commits *before* the response is sent (the dependency
has function scope), so a 2xx means the write is durable; any exception rolls everything back.
"""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


async def get_conn(request: Request) -> AsyncIterator[AsyncConnection]:
    engine: AsyncEngine = request.app.state.engine
    async with engine.connect() as conn, conn.begin():
        yield conn


Conn = Annotated[AsyncConnection, Depends(get_conn, scope="function")]

"""Shared by the expiry tests: awards on a given day, the run, and what the books say."""

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.expiry.run import run


def days_ago(days: int) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


async def award(
    client: AsyncClient,
    operator: dict[str, str],
    card_number: str,
    points: int,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "award",
        "card_number": card_number,
        "points": points,
        "reason": "test",
    }
    if occurred_at is not None:
        body["occurred_at"] = occurred_at.isoformat()
    response = await client.post(
        "/v1/accruals", json=body, headers={**operator, "Idempotency-Key": str(uuid.uuid4())}
    )
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def balance(client: AsyncClient, headers: dict[str, str], card_number: str) -> Any:
    response = await client.get(f"/v1/cards/{card_number}/balance", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def expire(app: FastAPI, **kwargs: Any) -> tuple[int, int]:
    return await run(app.state.engine, app.state.program, app.state.settings, **kwargs)


async def breakage(engine: AsyncEngine) -> int:
    """Points in the breakage account, from its entries."""
    async with engine.connect() as conn:
        value = await conn.scalar(
            text(
                "SELECT coalesce(sum(e.amount), 0) FROM entries e "
                "JOIN accounts a ON a.id = e.account_id "
                "WHERE a.kind = 'operator_breakage' AND e.asset = 'points'"
            )
        )
    return int(value)


async def expiries(engine: AsyncEngine, card_number: str) -> list[int]:
    """The points each expiry transaction took from the card, oldest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT -e.amount FROM transactions t JOIN entries e ON e.transaction_id = t.id "
                "JOIN accounts a ON a.id = e.account_id JOIN cards c ON c.id = a.card_id "
                "WHERE t.type = 'expiry' AND c.card_number = :n ORDER BY t.id"
            ),
            {"n": card_number},
        )
        return [int(r[0]) for r in rows]


async def lots(engine: AsyncEngine, card_number: str) -> list[tuple[date, int]]:
    """The card's lots: (expires_on, amount), earliest first; never-expiring ones last."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT l.expires_on, l.amount FROM point_lots l JOIN cards c ON c.id = l.card_id "
                "WHERE c.card_number = :n AND l.expires_on <> 'infinity' "
                "ORDER BY l.expires_on, l.earned_on"
            ),
            {"n": card_number},
        )
        return [(r[0], int(r[1])) for r in rows]

"""Shared by the settlement tests: closing periods as if the clock were later (postings are
always posted now, so a test closes the current period by closing "a month from now")."""

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient

from app.settlement.service import close
from tests.agreements.test_prices import price_body, set_price
from tests.factories.cards import issue_card
from tests.factories.partners import partner_with_key


def later(days: int) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


async def close_at(app: FastAPI, moment: datetime) -> list[Any]:
    """Close what has ended by `moment`; the periods closed (start, end, statements)."""
    async with app.state.engine.begin() as conn:
        closed = await close(conn, app.state.program, app.state.settings, None, now=moment)
    return [(p.period_start, p.period_end, p.statements) for p in closed.closed]


async def statements_of(
    client: AsyncClient, headers: dict[str, str], partner_id: str | None = None
) -> list[dict[str, Any]]:
    params = {"partner_id": partner_id} if partner_id else {}
    r = await client.get("/v1/statements", params=params, headers=headers)
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()
    return found


async def statement(client: AsyncClient, headers: dict[str, str], sid: str) -> dict[str, Any]:
    r = await client.get(f"/v1/statements/{sid}", headers=headers)
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


def lines(read: dict[str, Any]) -> list[tuple[str, bool, int | None, int, int, int]]:
    return [
        (x["kind"], x["late"], x["points_price"], x["postings"], x["quantity"], x["amount"])
        for x in read["lines"]
    ]


async def priced_partner(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], issue: int = 800
) -> tuple[dict[str, Any], dict[str, str], str]:
    """A partner with a till key and prices (`issue` per 1,000 points, reimbursement 600), and
    a new card to buy with."""
    partner, till = await partner_with_key(app, client, operator)
    await set_price(client, operator, partner["id"], price_body(issue, 600))
    card: str = (await issue_card(client, operator))["card_number"]
    return partner, till, card

"""The hot path's statement count is part of its design (docs/ARCHITECTURE.md): a fresh
posting is BEGIN, five statements, COMMIT. This test keeps it from growing unnoticed."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from httpx import AsyncClient
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import idem
from tests.factories.cards import funded_card, issue_card
from tests.factories.partners import create_partner


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split())[:60])

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_purchase_accrual_is_five_statements(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner = await create_partner(client, operator)
    card = await issue_card(client, operator)
    body = {
        "kind": "purchase",
        "card_number": card["card_number"],
        "amount": 12_345,
        "currency": "EUR",
        "reference": "R-1",
        "partner_id": partner["id"],
    }
    key = idem()
    with statements(engine) as seen:
        first = await client.post("/v1/accruals", json=body, headers={**operator, **key})
    assert first.status_code == 201, first.text
    assert len(seen) == 5, seen  # auth, claim key, context, post, store answer

    with statements(engine) as seen:
        replay = await client.post("/v1/accruals", json=body, headers={**operator, **key})
    assert replay.content == first.content
    assert len(seen) == 3, seen  # auth, claim key (conflict), fetch answer


async def test_redemption_is_five_statements(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    card = await funded_card(client, operator, 50)
    body = {"card_number": card["card_number"], "asset": "points", "amount": 5, "reference": "r"}
    with statements(engine) as seen:
        response = await client.post("/v1/redemptions", json=body, headers={**operator, **idem()})
    assert response.status_code == 201, response.text
    assert len(seen) == 5, seen

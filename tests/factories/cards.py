import uuid
from typing import Any

from httpx import AsyncClient


async def issue_card(client: AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/cards", json=body, headers=headers)
    assert response.status_code == 201, response.text
    card: dict[str, Any] = response.json()
    return card


async def funded_card(client: AsyncClient, operator: dict[str, str], points: int) -> dict[str, Any]:
    """A card holding `points`, credited by an operator award."""
    card = await issue_card(client, operator)
    response = await client.post(
        "/v1/accruals",
        json={
            "kind": "award",
            "card_number": card["card_number"],
            "points": points,
            "reason": "test funding",
        },
        headers={**operator, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert response.status_code == 201, response.text
    return card

import itertools
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient

from tests.factories.api_keys import bearer, insert_api_key

_codes = itertools.count()


async def create_partner(
    client: AsyncClient, operator: dict[str, str], **overrides: Any
) -> dict[str, Any]:
    body = {
        "code": f"partner-{next(_codes)}",
        "name": "Test Partner",
        "earn_rate": {"points": 1, "per_amount": 100},
        "cashback_bps": 500,
        **overrides,
    }
    response = await client.post("/v1/partners", json=body, headers=operator)
    assert response.status_code == 201, response.text
    partner: dict[str, Any] = response.json()
    return partner


async def partner_with_key(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], **overrides: Any
) -> tuple[dict[str, Any], dict[str, str]]:
    """A partner and the Authorization header of a till key bound to it."""
    partner = await create_partner(client, operator, **overrides)
    key = await insert_api_key(app, role="partner", partner_id=partner["id"])
    return partner, bearer(key)

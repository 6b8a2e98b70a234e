"""Partners over HTTP: create and read, and their earn/redeem switches."""

import uuid
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import idem
from tests.factories.cards import funded_card, issue_card
from tests.factories.partners import create_partner, partner_with_key

PROBLEM_JSON = "application/problem+json"


def assert_problem(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    return body


async def count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def test_create_then_get_round_trip(client: AsyncClient, operator: dict[str, str]) -> None:
    body = {
        "code": "fitclub",
        "name": "Fit Club",
        "earn_rate": {"points": 3, "per_amount": 250},
        "cashback_bps": 125,
        "can_earn": True,
        "can_redeem": False,
    }
    created = await client.post("/v1/partners", json=body, headers=operator)
    assert created.status_code == 201, created.text
    partner = created.json()
    uuid.UUID(partner["id"])
    assert {k: partner[k] for k in body} == body
    assert partner["created_at"]

    fetched = await client.get(f"/v1/partners/{partner['id']}", headers=operator)
    assert fetched.status_code == 200
    assert fetched.json() == partner


async def test_defaults(client: AsyncClient, operator: dict[str, str]) -> None:
    response = await client.post(
        "/v1/partners",
        json={"code": "bakery", "name": "Bakery", "earn_rate": {"points": 1, "per_amount": 100}},
        headers=operator,
    )
    assert response.status_code == 201, response.text
    partner = response.json()
    assert partner["cashback_bps"] == 0
    assert partner["can_earn"] is True
    assert partner["can_redeem"] is True


async def test_partner_gets_issued_and_redeemed_accounts_per_asset(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner = await create_partner(client, operator)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT kind, asset, balance FROM accounts WHERE partner_id = :p "
                    "ORDER BY kind, asset"
                ),
                {"p": uuid.UUID(partner["id"])},
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("partner_issued", "cashback", None),
        ("partner_issued", "points", None),
        ("partner_redeemed", "cashback", None),
        ("partner_redeemed", "points", None),
    ]


async def test_duplicate_code_is_409(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    await create_partner(client, operator, code="dup")
    response = await client.post(
        "/v1/partners",
        json={"code": "dup", "name": "Other", "earn_rate": {"points": 2, "per_amount": 100}},
        headers=operator,
    )
    assert_problem(response, 409, "partner_code_taken")
    assert await count(engine, "partners") == 1
    assert await count(engine, "accounts WHERE partner_id IS NOT NULL") == 4


async def test_unknown_partner_is_404(client: AsyncClient, operator: dict[str, str]) -> None:
    response = await client.get(f"/v1/partners/{uuid.uuid4()}", headers=operator)
    assert_problem(response, 404, "partner_not_found")


async def test_malformed_partner_id_is_422(client: AsyncClient, operator: dict[str, str]) -> None:
    response = await client.get("/v1/partners/not-a-uuid", headers=operator)
    assert_problem(response, 422, "validation_error")


VALID = {"code": "ok", "name": "Ok", "earn_rate": {"points": 1, "per_amount": 100}}


async def test_invalid_partner_is_422(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    for override in [
        {"code": "Upper"},
        {"code": "-leading-dash"},
        {"code": ""},
        {"code": "x" * 65},
        {"name": ""},
        {"earn_rate": {"points": 1, "per_amount": 0}},
        {"earn_rate": {"points": -1, "per_amount": 100}},
        {"earn_rate": {"points": "1", "per_amount": 100}},
        {"earn_rate": {"points": 1.5, "per_amount": 100}},
        {"earn_rate": {"points": 1}},
        {"cashback_bps": 10_001},
        {"cashback_bps": -1},
        {"can_earn": "yes"},
        {"unknown_field": 1},
    ]:
        response = await client.post("/v1/partners", json={**VALID, **override}, headers=operator)
        assert response.status_code == 422, (override, response.text)
        assert_problem(response, 422, "validation_error")
    assert await count(engine, "partners") == 0


async def _purchase(
    client: AsyncClient, headers: dict[str, str], number: str, reference: str, **extra: Any
) -> Response:
    return await client.post(
        "/v1/accruals",
        json={
            "kind": "purchase",
            "card_number": number,
            "amount": 10_000,
            "currency": "EUR",
            "reference": reference,
            **extra,
        },
        headers={**headers, **idem()},
    )


async def _redeem(
    client: AsyncClient, headers: dict[str, str], number: str, reference: str, **extra: Any
) -> Response:
    return await client.post(
        "/v1/redemptions",
        json={
            "card_number": number,
            "asset": "points",
            "amount": 10,
            "reference": reference,
            **extra,
        },
        headers={**headers, **idem()},
    )


async def test_partner_that_cannot_earn(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator, can_earn=False)
    card = await funded_card(client, operator, 100)
    number = card["card_number"]
    before = await count(engine, "transactions")

    assert_problem(await _purchase(client, till, number, "R-1"), 409, "partner_cannot_earn")
    assert_problem(
        await _purchase(client, operator, number, "R-2", partner_id=partner["id"]),
        409,
        "partner_cannot_earn",
    )
    assert await count(engine, "transactions") == before

    # Redeeming there is still allowed.
    redeemed = await _redeem(client, till, number, "R-3")
    assert redeemed.status_code == 201, redeemed.text
    assert redeemed.json()["balance"] == {"points": 90, "cashback": 0}


async def test_partner_that_cannot_redeem(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator, can_redeem=False)
    card = await funded_card(client, operator, 100)
    number = card["card_number"]
    before = await count(engine, "transactions")

    assert_problem(await _redeem(client, till, number, "R-1"), 409, "partner_cannot_redeem")
    assert_problem(
        await _redeem(client, operator, number, "R-2", partner_id=partner["id"]),
        409,
        "partner_cannot_redeem",
    )
    assert await count(engine, "transactions") == before
    balance = (await client.get(f"/v1/cards/{number}/balance", headers=operator)).json()
    assert balance["points"] == 100

    # Earning there is still allowed.
    earned = await _purchase(client, till, number, "R-3")
    assert earned.status_code == 201, earned.text
    assert earned.json()["balance"] == {"points": 200, "cashback": 500}


async def test_operator_purchase_needs_a_partner(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    card = await issue_card(client, operator)
    response = await _purchase(client, operator, card["card_number"], "R-1")
    assert_problem(response, 422, "partner_required")


async def test_operator_posting_at_unknown_partner_is_404(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    card = await funded_card(client, operator, 100)
    number = card["card_number"]
    missing = str(uuid.uuid4())
    assert_problem(
        await _purchase(client, operator, number, "R-1", partner_id=missing),
        404,
        "partner_not_found",
    )
    assert_problem(
        await _redeem(client, operator, number, "R-2", partner_id=missing),
        404,
        "partner_not_found",
    )
    assert await count(engine, "transactions") == 1  # the funding award only


async def test_operator_posts_purchase_at_partner_by_its_rates(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    partner = await create_partner(
        client, operator, earn_rate={"points": 3, "per_amount": 1000}, cashback_bps=250
    )
    card = await issue_card(client, operator)
    response = await _purchase(
        client, operator, card["card_number"], "R-1", partner_id=partner["id"]
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["partner_id"] == partner["id"]
    # 10000 * 3 // 1000 = 30 points; 10000 * 250 // 10000 = 250 cents.
    assert body["earned"] == {"points": 30, "cashback": 250}
    assert body["balance"] == {"points": 30, "cashback": 250}

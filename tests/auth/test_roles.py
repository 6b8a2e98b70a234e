"""Authorization: what a partner key may not do, and what it may not see."""

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


async def purchase(
    client: AsyncClient, headers: dict[str, str], card_number: str, reference: str, **extra: Any
) -> Response:
    body = {
        "kind": "purchase",
        "card_number": card_number,
        "amount": 10_000,
        "currency": "EUR",
        "reference": reference,
        **extra,
    }
    return await client.post("/v1/accruals", json=body, headers={**headers, **idem()})


async def test_partner_key_is_forbidden_operator_routes(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    card = await issue_card(client, operator)
    number = card["card_number"]
    keys_before = await count(engine, "api_keys")
    partners_before = await count(engine, "partners")

    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        (
            "POST",
            "/v1/partners",
            {"code": "rogue", "name": "Rogue", "earn_rate": {"points": 1, "per_amount": 1}},
        ),
        ("GET", f"/v1/partners/{partner['id']}", None),
        ("POST", "/v1/api-keys", {"name": "mine", "role": "operator"}),
        (
            "POST",
            "/v1/api-keys",
            {"name": "mine", "role": "partner", "partner_id": partner["id"]},
        ),
        ("GET", "/v1/api-keys", None),
        ("POST", f"/v1/cards/{number}/block", None),
        ("POST", f"/v1/cards/{number}/unblock", None),
    ]
    for method, path, body in requests:
        response = await client.request(method, path, json=body, headers=till)
        assert_problem(response, 403, "forbidden")

    assert await count(engine, "api_keys") == keys_before
    assert await count(engine, "partners") == partners_before
    status = (await client.get(f"/v1/cards/{number}", headers=operator)).json()["status"]
    assert status == "active"


async def test_partner_key_cannot_revoke_keys(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    async with engine.connect() as conn:
        ids = (await conn.execute(text("SELECT id FROM api_keys"))).scalars().all()
    for key_id in ids:
        response = await client.post(f"/v1/api-keys/{key_id}/revoke", headers=till)
        assert_problem(response, 403, "forbidden")
    assert (await client.get("/v1/api-keys", headers=operator)).status_code == 200


async def test_partner_key_cannot_award(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = await issue_card(client, operator)
    response = await client.post(
        "/v1/accruals",
        json={"kind": "award", "card_number": card["card_number"], "points": 50, "reason": "x"},
        headers={**till, **idem()},
    )
    assert_problem(response, 403, "forbidden")
    assert await count(engine, "transactions") == 0
    balance = (await client.get(f"/v1/cards/{card['card_number']}/balance", headers=till)).json()
    assert (balance["points"], balance["cashback"]) == (0, 0)


async def test_partner_key_cannot_post_purchase_as_another_partner(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till_a = await partner_with_key(app, client, operator)
    partner_b = await create_partner(client, operator)
    card = await issue_card(client, operator)

    response = await purchase(
        client, till_a, card["card_number"], "R-1", partner_id=partner_b["id"]
    )
    assert_problem(response, 403, "forbidden")
    assert await count(engine, "transactions") == 0
    assert await count(engine, "entries") == 0
    after = (await client.get(f"/v1/cards/{card['card_number']}", headers=operator)).json()
    assert (after["points"], after["cashback"]) == (0, 0)


async def test_partner_key_may_name_itself(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    partner_a, till_a = await partner_with_key(app, client, operator)
    card = await issue_card(client, operator)
    response = await purchase(
        client, till_a, card["card_number"], "R-1", partner_id=partner_a["id"]
    )
    assert response.status_code == 201, response.text
    assert response.json()["partner_id"] == partner_a["id"]


async def test_partner_key_cannot_redeem_as_another_partner(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till_a = await partner_with_key(app, client, operator)
    partner_b = await create_partner(client, operator)
    card = await funded_card(client, operator, 100)
    transactions_before = await count(engine, "transactions")

    response = await client.post(
        "/v1/redemptions",
        json={
            "card_number": card["card_number"],
            "asset": "points",
            "amount": 10,
            "reference": "R-1",
            "partner_id": partner_b["id"],
        },
        headers={**till_a, **idem()},
    )
    assert_problem(response, 403, "forbidden")
    assert await count(engine, "transactions") == transactions_before
    after = (await client.get(f"/v1/cards/{card['card_number']}", headers=operator)).json()
    assert after["points"] == 100


async def test_partner_cannot_read_another_partners_transaction(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    partner_a, till_a = await partner_with_key(app, client, operator)
    _, till_b = await partner_with_key(app, client, operator)
    card = await issue_card(client, operator)
    posted = await purchase(client, till_a, card["card_number"], "R-1")
    assert posted.status_code == 201, posted.text
    tx_id = posted.json()["transaction_id"]

    assert_problem(
        await client.get(f"/v1/transactions/{tx_id}", headers=till_b), 404, "transaction_not_found"
    )
    own = await client.get(f"/v1/transactions/{tx_id}", headers=till_a)
    assert own.status_code == 200, own.text
    assert own.json()["partner_id"] == partner_a["id"]
    as_operator = await client.get(f"/v1/transactions/{tx_id}", headers=operator)
    assert as_operator.status_code == 200
    assert as_operator.json() == own.json()


async def test_partner_cannot_read_operator_transaction(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = await issue_card(client, operator)
    award = await client.post(
        "/v1/accruals",
        json={"kind": "award", "card_number": card["card_number"], "points": 5, "reason": "x"},
        headers={**operator, **idem()},
    )
    tx_id = award.json()["transaction_id"]
    response = await client.get(f"/v1/transactions/{tx_id}", headers=till)
    # Indistinguishable from a transaction that does not exist.
    body = assert_problem(response, 404, "transaction_not_found")
    missing = await client.get(f"/v1/transactions/{uuid.uuid4()}", headers=till)
    assert assert_problem(missing, 404, "transaction_not_found") == body


async def test_card_history_is_filtered_by_partner(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    partner_a, till_a = await partner_with_key(app, client, operator)
    partner_b, till_b = await partner_with_key(app, client, operator)
    card = await funded_card(client, operator, 100)
    number = card["card_number"]

    ids_a = []
    for ref in ("A-1", "A-2"):
        r = await purchase(client, till_a, number, ref)
        assert r.status_code == 201, r.text
        ids_a.append(r.json()["transaction_id"])
    r = await purchase(client, till_b, number, "B-1")
    assert r.status_code == 201, r.text
    id_b = r.json()["transaction_id"]

    seen_a = (await client.get(f"/v1/cards/{number}/transactions", headers=till_a)).json()
    assert [i["id"] for i in seen_a["items"]] == ids_a[::-1]
    assert {i["partner_id"] for i in seen_a["items"]} == {partner_a["id"]}
    assert seen_a["next_cursor"] is None

    seen_b = (await client.get(f"/v1/cards/{number}/transactions", headers=till_b)).json()
    assert [i["id"] for i in seen_b["items"]] == [id_b]
    assert seen_b["items"][0]["partner_id"] == partner_b["id"]

    seen_op = (await client.get(f"/v1/cards/{number}/transactions", headers=operator)).json()
    # The funding award, two purchases at A, one at B.
    assert len(seen_op["items"]) == 4
    assert [i["id"] for i in seen_op["items"][:3]] == [id_b, *ids_a[::-1]]
    assert seen_op["items"][3]["type"] == "award"
    assert seen_op["items"][3]["partner_id"] is None


async def test_partner_redeems_at_own_partner_by_default(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    card = await issue_card(client, operator)
    earned = await purchase(client, till, card["card_number"], "R-1")
    assert earned.status_code == 201, earned.text
    assert earned.json()["earned"] == {"points": 100, "cashback": 500}
    expected = {"points": 100, "cashback": 500}
    for asset in ("points", "cashback"):
        response = await client.post(
            "/v1/redemptions",
            json={
                "card_number": card["card_number"],
                "asset": asset,
                "amount": 7,
                "reference": f"X-{asset}",
            },
            headers={**till, **idem()},
        )
        assert response.status_code == 201, response.text
        assert response.json()["partner_id"] == partner["id"]
        expected[asset] -= 7
        assert response.json()["balance"] == expected

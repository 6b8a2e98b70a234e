"""Cards over HTTP: issue (generated or supplied numbers), read, block and unblock."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.schemas import luhn_valid
from app.main import create_app
from tests.conftest import idem
from tests.factories.api_keys import bearer, insert_api_key
from tests.factories.cards import funded_card, issue_card
from tests.factories.partners import partner_with_key

PROBLEM_JSON = "application/problem+json"


def assert_problem(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    return body


def with_check_digit(partial: str) -> str:
    return next(partial + d for d in "0123456789" if luhn_valid(partial + d))


async def test_generated_number_has_default_prefix_length_and_luhn(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    card = await issue_card(client, operator)
    number = card["card_number"]
    assert len(number) == 16
    assert number.isdigit()
    assert number.startswith("7")
    assert luhn_valid(number)
    assert card["kind"] == "bearer"
    assert card["status"] == "active"
    assert card["customer_reference"] is None
    assert (card["points"], card["cashback"], card["currency"]) == (0, 0, "EUR")


@pytest.fixture
async def custom_client(database_url: str) -> AsyncIterator[tuple[AsyncClient, dict[str, str]]]:
    settings = Settings(  # type: ignore[call-arg]
        database_url=database_url,
        card_number_prefix="6012",
        card_number_length=19,
        _env_file=None,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        key = await insert_api_key(application, role="operator")
        transport = ASGITransport(app=application)
        async with AsyncClient(transport=transport, base_url="http://ledger.test") as c:
            yield c, bearer(key)


async def test_generated_number_follows_configured_prefix_and_length(
    custom_client: tuple[AsyncClient, dict[str, str]],
) -> None:
    client, operator = custom_client
    for _ in range(5):
        number = (await issue_card(client, operator))["card_number"]
        assert len(number) == 19
        assert number.startswith("6012")
        assert number.isdigit()
        assert luhn_valid(number)


async def test_generated_numbers_are_unique(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    numbers = [(await issue_card(client, operator))["card_number"] for _ in range(40)]
    assert len(set(numbers)) == 40
    assert all(luhn_valid(n) for n in numbers)
    async with engine.connect() as conn:
        cards = (await conn.execute(text("SELECT count(*) FROM cards"))).scalar_one()
        accounts = (
            await conn.execute(text("SELECT count(*) FROM accounts WHERE kind = 'card'"))
        ).scalar_one()
    assert cards == 40
    assert accounts == 80  # points and cashback per card


async def test_each_card_gets_a_points_and_a_cashback_account(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    card = await issue_card(client, operator)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT a.asset, a.balance FROM accounts a JOIN cards c ON c.id = a.card_id "
                    "WHERE c.card_number = :n ORDER BY a.asset"
                ),
                {"n": card["card_number"]},
            )
        ).all()
    assert [tuple(r) for r in rows] == [("cashback", 0), ("points", 0)]


async def test_personalized_card_keeps_customer_reference(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    card = await issue_card(client, operator, kind="personalized", customer_reference="cust-42")
    assert card["kind"] == "personalized"
    assert card["customer_reference"] == "cust-42"
    fetched = await client.get(f"/v1/cards/{card['card_number']}", headers=operator)
    assert fetched.status_code == 200
    assert fetched.json() == card


async def test_customer_reference_must_match_kind(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    for body in [
        {"kind": "personalized"},
        {"kind": "personalized", "customer_reference": None},
        {"kind": "bearer", "customer_reference": "cust-42"},
        {"customer_reference": "cust-42"},
    ]:
        response = await client.post("/v1/cards", json=body, headers=operator)
        assert response.status_code == 422, (body, response.text)
        assert_problem(response, 422, "customer_reference_mismatch")
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM cards"))).scalar_one() == 0


async def test_invalid_issue_requests_are_422(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    for body in [
        {"kind": "gold"},
        {"kind": "personalized", "customer_reference": ""},
        {"card_number": "79927398710"},  # Luhn check digit wrong
        {"card_number": "1234567"},  # too short
        {"card_number": "12345678901234567894"},  # 20 digits, Luhn-valid
        {"card_number": "7992 7398 713"},
        {"card_number": 79927398713},
        {"colour": "red"},
    ]:
        response = await client.post("/v1/cards", json=body, headers=operator)
        assert response.status_code == 422, (body, response.text)
        assert_problem(response, 422, "validation_error")


async def test_operator_may_supply_a_card_number(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    number = with_check_digit("123456789012345")
    card = await issue_card(client, operator, card_number=number)
    assert card["card_number"] == number
    fetched = await client.get(f"/v1/cards/{number}", headers=operator)
    assert fetched.status_code == 200
    assert fetched.json()["card_number"] == number


async def test_partner_key_may_not_supply_a_card_number(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    response = await client.post("/v1/cards", json={"card_number": "79927398713"}, headers=till)
    assert_problem(response, 403, "forbidden")
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM cards"))).scalar_one() == 0


async def test_partner_key_may_issue_a_generated_card(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    card = await issue_card(client, till)
    assert luhn_valid(card["card_number"])
    async with engine.connect() as conn:
        issuer = (
            await conn.execute(
                text("SELECT issued_by_partner_id FROM cards WHERE card_number = :n"),
                {"n": card["card_number"]},
            )
        ).scalar_one()
    assert str(issuer) == partner["id"]


async def test_supplying_an_existing_number_is_409(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    await issue_card(client, operator, card_number="79927398713")
    response = await client.post(
        "/v1/cards",
        json={"card_number": "79927398713", "kind": "personalized", "customer_reference": "c"},
        headers=operator,
    )
    assert_problem(response, 409, "card_number_taken")
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT kind FROM cards"))).scalars().all()
    assert rows == ["bearer"]


async def test_issue_with_idempotency_key_replays_the_same_card(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    headers = {**operator, **idem()}
    first = await client.post("/v1/cards", json={}, headers=headers)
    second = await client.post("/v1/cards", json={}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers.get("idempotent-replayed") == "true"
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM cards"))).scalar_one() == 1


async def test_get_unknown_card_is_404(client: AsyncClient, operator: dict[str, str]) -> None:
    response = await client.get("/v1/cards/79927398713", headers=operator)
    assert_problem(response, 404, "card_not_found")


async def test_get_malformed_card_number_is_422(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    for number in ["79927398710", "12345", "7992739871a"]:
        response = await client.get(f"/v1/cards/{number}", headers=operator)
        assert response.status_code == 422, (number, response.text)
        assert_problem(response, 422, "validation_error")


async def test_block_unknown_card_is_404(client: AsyncClient, operator: dict[str, str]) -> None:
    for action in ("block", "unblock"):
        response = await client.post(f"/v1/cards/79927398713/{action}", headers=operator)
        assert_problem(response, 404, "card_not_found")


async def _purchase(
    client: AsyncClient, till: dict[str, str], number: str, reference: str
) -> Response:
    return await client.post(
        "/v1/accruals",
        json={
            "kind": "purchase",
            "card_number": number,
            "amount": 1_000,
            "currency": "EUR",
            "reference": reference,
        },
        headers={**till, **idem()},
    )


async def _redeem(
    client: AsyncClient, till: dict[str, str], number: str, reference: str
) -> Response:
    return await client.post(
        "/v1/redemptions",
        json={"card_number": number, "asset": "points", "amount": 5, "reference": reference},
        headers={**till, **idem()},
    )


async def _award(client: AsyncClient, operator: dict[str, str], number: str) -> Response:
    return await client.post(
        "/v1/accruals",
        json={"kind": "award", "card_number": number, "points": 1, "reason": "goodwill"},
        headers={**operator, **idem()},
    )


async def test_blocked_card_can_neither_earn_nor_spend_until_unblocked(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = await funded_card(client, operator, 100)
    number = card["card_number"]

    blocked = await client.post(f"/v1/cards/{number}/block", headers=operator)
    assert blocked.status_code == 200, blocked.text
    assert blocked.json()["status"] == "blocked"
    assert blocked.json()["points"] == 100  # balances are kept
    assert (await client.get(f"/v1/cards/{number}", headers=till)).json()["status"] == "blocked"
    balance = (await client.get(f"/v1/cards/{number}/balance", headers=operator)).json()
    assert balance["status"] == "blocked"

    async with engine.connect() as conn:
        before = (await conn.execute(text("SELECT count(*) FROM transactions"))).scalar_one()
    assert_problem(await _purchase(client, till, number, "R-1"), 409, "card_blocked")
    assert_problem(await _redeem(client, till, number, "R-2"), 409, "card_blocked")
    assert_problem(await _redeem(client, operator, number, "R-3"), 409, "card_blocked")
    assert_problem(await _award(client, operator, number), 409, "card_blocked")
    async with engine.connect() as conn:
        after = (await conn.execute(text("SELECT count(*) FROM transactions"))).scalar_one()
    assert after == before
    assert (await client.get(f"/v1/cards/{number}", headers=operator)).json()["points"] == 100

    # Blocking twice is harmless.
    again = await client.post(f"/v1/cards/{number}/block", headers=operator)
    assert again.status_code == 200
    assert again.json()["status"] == "blocked"

    unblocked = await client.post(f"/v1/cards/{number}/unblock", headers=operator)
    assert unblocked.status_code == 200, unblocked.text
    assert unblocked.json()["status"] == "active"

    earned = await _purchase(client, till, number, "R-1")
    assert earned.status_code == 201, earned.text
    assert earned.json()["balance"] == {"points": 110, "cashback": 50}
    spent = await _redeem(client, till, number, "R-2")
    assert spent.status_code == 201, spent.text
    assert spent.json()["balance"] == {"points": 105, "cashback": 50}
    assert (await _award(client, operator, number)).status_code == 201

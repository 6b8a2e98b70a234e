"""POST /v1/redemptions/{id}/refunds: what a redemption spent goes back, never more."""

import asyncio
import uuid
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient

from tests.conftest import idem
from tests.factories.cards import funded_card
from tests.factories.partners import partner_with_key


async def _redeem(client: AsyncClient, till: dict[str, str], card: str, amount: int) -> str:
    body = {"card_number": card, "asset": "points", "amount": amount, "reference": uuid.uuid4().hex}
    r = await client.post("/v1/redemptions", json=body, headers={**till, **idem()})
    assert r.status_code == 201, r.text
    return str(r.json()["transaction_id"])


async def _refund(
    client: AsyncClient, headers: dict[str, str], tx: str, amount: int, **extra: Any
) -> Any:
    return await client.post(
        f"/v1/redemptions/{tx}/refunds",
        json={"amount": amount, **extra},
        headers={**headers, **idem()},
    )


async def _points(client: AsyncClient, headers: dict[str, str], card: str) -> int:
    return int((await client.get(f"/v1/cards/{card}/balance", headers=headers)).json()["points"])


async def test_partial_refunds_add_up_to_at_most_what_was_spent(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    tx = await _redeem(client, till, card, 10)
    assert await _points(client, till, card) == 90

    for amount, total, left in [(3, 3, 7), (3, 6, 4), (3, 9, 1)]:
        r = await _refund(client, till, tx, amount)
        assert r.status_code == 201, r.text
        assert (r.json()["refunded_total"], r.json()["refundable"]) == (total, left)
    r = await _refund(client, till, tx, 2)
    assert (r.status_code, r.json()["code"]) == (422, "refund_exceeds_original")
    assert r.json()["refundable"] == 1
    r = await _refund(client, till, tx, 1)
    assert r.status_code == 201 and r.json()["refundable"] == 0
    assert await _points(client, till, card) == 100

    # Fully refunded: a reversal would give it back twice.
    reversal = await client.post(
        f"/v1/transactions/{tx}/reversal", json={}, headers={**till, **idem()}
    )
    assert (reversal.status_code, reversal.json()["code"]) == (409, "already_refunded")
    assert (await client.get("/v1/audit", headers=operator)).json()["ok"] is True


async def test_refunds_racing_past_the_original_cannot_both_succeed(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    tx = await _redeem(client, till, card, 10)
    answers = await asyncio.gather(*(_refund(client, till, tx, 4) for _ in range(5)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201, 201, 422, 422, 422], [a.text for a in answers]
    assert await _points(client, till, card) == 98
    assert (await client.get("/v1/audit", headers=operator)).json()["ok"] is True


async def test_refund_refusals(app: FastAPI, client: AsyncClient, operator: dict[str, str]) -> None:
    _, till = await partner_with_key(app, client, operator)
    _, other_till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    tx = await _redeem(client, till, card, 10)

    r = await _refund(client, other_till, tx, 1)
    assert (r.status_code, r.json()["code"]) == (404, "transaction_not_found")
    accrual = {
        "kind": "purchase",
        "card_number": card,
        "amount": 500,
        "currency": "EUR",
        "reference": "a",
    }
    a = await client.post("/v1/accruals", json=accrual, headers={**till, **idem()})
    r = await _refund(client, till, a.json()["transaction_id"], 1)
    assert (r.status_code, r.json()["code"]) == (422, "not_a_redemption")
    r = await _refund(client, till, tx, 0)
    assert (r.status_code, r.json()["code"]) == (422, "validation_error")

    # A reversed redemption has nothing left to refund.
    reversal = await client.post(
        f"/v1/transactions/{tx}/reversal", json={}, headers={**till, **idem()}
    )
    assert reversal.status_code == 201, reversal.text
    r = await _refund(client, till, tx, 1)
    assert (r.status_code, r.json()["code"]) == (422, "refund_exceeds_original")

    # A refund's own reference posts once.
    tx2 = await _redeem(client, till, card, 10)
    assert (await _refund(client, till, tx2, 1, reference="RF-1")).status_code == 201
    r = await _refund(client, till, tx2, 1, reference="RF-1")
    assert (r.status_code, r.json()["code"]) == (409, "duplicate_reference")


async def test_refunds_and_returns_of_a_replaced_card_land_on_its_replacement(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    """The customer lost the card the order was paid with: the refund goes to the new card,
    and refunds made before and after the replacement add up against the same original."""
    _, till = await partner_with_key(app, client, operator)
    old = (await funded_card(client, operator, 100))["card_number"]
    tx = await _redeem(client, till, old, 40)
    buy = {"kind": "purchase", "card_number": old, "amount": 1_000, "currency": "EUR"}
    r = await client.post(
        "/v1/accruals", json={**buy, "reference": "p"}, headers={**till, **idem()}
    )
    accrual = r.json()["transaction_id"]  # 10 points, 50 cashback
    assert (await _refund(client, till, tx, 15)).status_code == 201

    r = await client.post(f"/v1/cards/{old}/replace", json={}, headers={**operator, **idem()})
    assert r.status_code == 201, r.text
    new = r.json()["new_card"]["card_number"]
    assert await _points(client, till, new) == 100 - 40 + 15 + 10

    r = await _refund(client, till, tx, 26)
    assert (r.status_code, r.json()["code"], r.json()["refundable"]) == (
        422,
        "refund_exceeds_original",
        25,
    )
    r = await _refund(client, till, tx, 25)
    assert r.status_code == 201, r.text
    assert (r.json()["card_number"], r.json()["balance"]["points"]) == (new, 110)

    r = await client.post(
        f"/v1/accruals/{accrual}/refunds", json={"amount": 1_000}, headers={**till, **idem()}
    )
    assert r.status_code == 201, r.text
    assert r.json()["card_number"] == new
    assert r.json()["taken_back"] == {"points": 10, "cashback": 50}
    assert await _points(client, till, new) == 100
    assert await _points(client, till, old) == 0
    history = (await client.get(f"/v1/cards/{new}/transactions", headers=operator)).json()
    assert [i["type"] for i in history["items"][:2]] == ["refund", "refund"]
    assert (await client.get("/v1/audit", headers=operator)).json()["ok"] is True


async def test_a_card_closed_without_a_successor_takes_no_refund(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 10))["card_number"]
    tx = await _redeem(client, till, card, 10)
    r = await client.post(f"/v1/cards/{card}/close", headers={**operator, **idem()})
    assert r.status_code == 200, r.text
    r = await _refund(client, till, tx, 5)
    assert (r.status_code, r.json()["code"]) == (409, "card_closed")

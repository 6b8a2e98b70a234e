"""POST /v1/transactions/{id}/reversal: a full reversal, once, double-entry like the rest."""

import asyncio
import uuid
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient

from tests.conftest import idem
from tests.factories.cards import funded_card, issue_card
from tests.factories.partners import partner_with_key


async def _balance(client: AsyncClient, headers: dict[str, str], card: str) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get(f"/v1/cards/{card}/balance", headers=headers)).json()
    return {"points": body["points"], "cashback": body["cashback"]}


async def _purchase(client: AsyncClient, till: dict[str, str], card: str, amount: int) -> str:
    body = {
        "kind": "purchase",
        "card_number": card,
        "amount": amount,
        "currency": "EUR",
        "reference": uuid.uuid4().hex,
    }
    r = await client.post("/v1/accruals", json=body, headers={**till, **idem()})
    assert r.status_code == 201, r.text
    return str(r.json()["transaction_id"])


async def _reverse(
    client: AsyncClient, headers: dict[str, str], tx: str, key: dict[str, str] | None = None
) -> Any:
    return await client.post(
        f"/v1/transactions/{tx}/reversal",
        json={"reason": "wrong card"},
        headers={**headers, **(key or idem())},
    )


async def test_reversing_an_accrual_restores_the_card_and_the_partner(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    tx = await _purchase(client, till, card, 10_000)  # 100 points, 500 cashback
    assert await _balance(client, till, card) == {"points": 100, "cashback": 500}

    r = await _reverse(client, till, tx)
    assert r.status_code == 201, r.text
    answer = r.json()
    assert answer["corrects_id"] == tx
    assert answer["reversed"] == {"points": -100, "cashback": -500}
    assert answer["balance"] == {"points": 0, "cashback": 0}
    assert await _balance(client, till, card) == {"points": 0, "cashback": 0}

    original = (await client.get(f"/v1/transactions/{tx}", headers=operator)).json()
    reversal = (
        await client.get(f"/v1/transactions/{answer['transaction_id']}", headers=operator)
    ).json()
    assert reversal["type"] == "reversal" and reversal["corrects_id"] == tx
    assert sorted((e["account_id"], -e["amount"]) for e in original["entries"]) == sorted(
        (e["account_id"], e["amount"]) for e in reversal["entries"]
    )
    history = (await client.get(f"/v1/cards/{card}/transactions", headers=till)).json()["items"]
    assert [(i["type"], i["points"]) for i in history] == [("reversal", -100), ("accrual", 100)]
    assert (await client.get("/v1/audit", headers=operator)).json()["ok"] is True


async def test_reversing_a_redemption_gives_the_points_back(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 50))["card_number"]
    spend = {"card_number": card, "asset": "points", "amount": 30, "reference": "r-1"}
    r = await client.post("/v1/redemptions", json=spend, headers={**till, **idem()})
    assert r.status_code == 201, r.text
    back = await _reverse(client, till, r.json()["transaction_id"])
    assert back.status_code == 201, back.text
    assert back.json()["reversed"] == {"points": 30, "cashback": 0}
    assert await _balance(client, till, card) == {"points": 50, "cashback": 0}


async def test_a_transaction_is_reversed_once_even_by_racing_tills(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    tx = await _purchase(client, till, card, 10_000)
    answers = await asyncio.gather(*(_reverse(client, till, tx) for _ in range(6)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201, 409, 409, 409, 409, 409], [a.text for a in answers]
    winner = next(a for a in answers if a.status_code == 201).json()["transaction_id"]
    for refused in (a for a in answers if a.status_code == 409):
        assert refused.json()["code"] == "already_reversed"
        assert refused.json()["transaction_id"] == winner
    assert await _balance(client, till, card) == {"points": 0, "cashback": 0}
    assert (await client.get("/v1/audit", headers=operator)).json()["ok"] is True


async def test_refusals(app: FastAPI, client: AsyncClient, operator: dict[str, str]) -> None:
    partner, till = await partner_with_key(app, client, operator)
    _, other_till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    tx = await _purchase(client, till, card, 10_000)

    # Another partner's posting does not exist to this till.
    r = await _reverse(client, other_till, tx)
    assert (r.status_code, r.json()["code"]) == (404, "transaction_not_found")
    r = await _reverse(client, till, str(uuid.uuid4()))
    assert (r.status_code, r.json()["code"]) == (404, "transaction_not_found")

    # Spent since: the reversal claws back, and the card owes what it spent (a debt).
    spend = {"card_number": card, "asset": "points", "amount": 60, "reference": "r-2"}
    assert (
        await client.post("/v1/redemptions", json=spend, headers={**till, **idem()})
    ).status_code == 201
    r = await _reverse(client, till, tx)
    assert r.status_code == 201, r.text
    assert r.json()["reversed"] == {"points": -100, "cashback": -500}
    assert r.json()["balance"] == {"points": -60, "cashback": 0}
    assert await _balance(client, till, card) == {"points": -60, "cashback": 0}
    debt = (await client.get(f"/v1/cards/{card}/balance", headers=till)).json()["debt"]
    assert debt == {"points": 60, "cashback": 0}
    spend = {"card_number": card, "asset": "points", "amount": 1, "reference": "r-3"}
    r = await client.post("/v1/redemptions", json=spend, headers={**till, **idem()})
    assert (r.status_code, r.json()["code"], r.json()["available"]) == (
        422,
        "insufficient_balance",
        -60,
    )

    # A reversal is not itself reversible; a retry replays the first answer.
    funded = (await funded_card(client, operator, 10))["card_number"]
    award = (await client.get(f"/v1/cards/{funded}/transactions", headers=operator)).json()[
        "items"
    ][0]
    key = idem()
    first = await _reverse(client, operator, award["id"], key)
    again = await _reverse(client, operator, award["id"], key)
    assert first.status_code == 201 and again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    r = await _reverse(client, operator, first.json()["transaction_id"])
    assert (r.status_code, r.json()["code"]) == (422, "not_reversible")
    assert partner["id"]

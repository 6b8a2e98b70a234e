from fastapi import FastAPI
from httpx import AsyncClient

from tests.conftest import idem
from tests.factories.cards import funded_card
from tests.factories.partners import partner_with_key


async def test_batch_posts_items_in_order_and_refuses_alone(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = await funded_card(client, operator, 10)
    n = card["card_number"]
    items = [
        {"type": "redemption", "card_number": n, "asset": "points", "amount": 8, "reference": "a"},
        {"type": "redemption", "card_number": n, "asset": "points", "amount": 8, "reference": "b"},
        {"type": "purchase", "card_number": n, "amount": 1000, "currency": "EUR", "reference": "c"},
        {"type": "redemption", "card_number": n, "asset": "points", "amount": 8, "reference": "b"},
    ]
    r = await client.post("/v1/batches", json={"items": items}, headers={**till, **idem()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["status"] for i in body["items"]] == [201, 422, 201, 201]
    assert body["posted"] == 3 and body["refused"] == 1
    assert body["items"][1]["problem"]["code"] == "insufficient_balance"
    assert body["items"][1]["problem"]["available"] == 2
    assert body["items"][3]["result"]["balance"]["points"] == 2 + 10 - 8

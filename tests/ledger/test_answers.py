"""The posting answers are built as plain dicts on the hot path (app/ledger/rules.py); the
pydantic models in app/ledger/schemas.py and app/batches/schemas.py document them in OpenAPI.
These tests keep the two in step: same fields, same order, same rendering."""

import json
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import BaseModel

from app.batches.schemas import BatchRead
from app.ledger.schemas import AccrualRead, RedemptionRead
from tests.conftest import idem
from tests.factories.cards import funded_card
from tests.factories.partners import partner_with_key


def assert_documented_by(model: type[BaseModel], raw: bytes) -> None:
    answer: dict[str, Any] = json.loads(raw)
    assert list(answer) == list(model.model_fields), "fields or their order differ"
    rendered = model.model_validate(answer).model_dump(mode="json")
    assert rendered == answer


async def test_answers_match_their_documented_models(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = await funded_card(client, operator, 50)
    n = card["card_number"]
    purchase = {
        "kind": "purchase",
        "card_number": n,
        "amount": 1234,
        "currency": "EUR",
        "reference": "p-1",
        "occurred_at": "2026-11-20T10:00:00.250+02:00",
    }
    award = {"kind": "award", "card_number": n, "points": 7, "reason": "goodwill"}
    tiny = {"kind": "purchase", "card_number": n, "amount": 1, "currency": "EUR", "reference": "t"}
    redemption = {"card_number": n, "asset": "points", "amount": 5, "reference": "r-1"}

    for path, body, headers, model, status in [
        ("/v1/accruals", purchase, till, AccrualRead, 201),
        ("/v1/accruals", award, operator, AccrualRead, 201),
        ("/v1/accruals", tiny, till, AccrualRead, 200),
        ("/v1/redemptions", redemption, till, RedemptionRead, 201),
    ]:
        response = await client.post(path, json=body, headers={**headers, **idem()})
        assert response.status_code == status, response.text
        assert_documented_by(model, response.content)

    # A client's own offset is kept as sent; the ledger's own times are UTC with "Z".
    first = json.loads(
        (
            await client.post(
                "/v1/accruals", json={**purchase, "reference": "p-2"}, headers={**till, **idem()}
            )
        ).content
    )
    assert first["occurred_at"] == "2026-11-20T10:00:00.250000+02:00"
    assert first["posted_at"].endswith("Z")

    items = [
        {"type": "purchase", **{**purchase, "reference": "b-1"}},
        {"type": "redemption", **{**redemption, "reference": "b-2"}},
        {"type": "redemption", **{**redemption, "reference": "b-3", "amount": 10**9}},
    ]
    batch = await client.post("/v1/batches", json={"items": items}, headers={**till, **idem()})
    assert batch.status_code == 200, batch.text
    assert_documented_by(BatchRead, batch.content)
    results = json.loads(batch.content)["items"]
    assert_documented_by(AccrualRead, json.dumps(results[0]["result"]).encode())
    assert_documented_by(RedemptionRead, json.dumps(results[1]["result"]).encode())
    assert results[2]["problem"]["code"] == "insufficient_balance"

"""POST /v1/accruals/preview: the same rules as a posting, and nothing written."""

from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import idem
from tests.factories.cards import funded_card, issue_card
from tests.factories.partners import partner_with_key

LADDER = {
    "tiers": [
        {"code": "basic", "name": "Basic", "threshold": 0},
        {"code": "gold", "name": "Gold", "threshold": 9_000, "points_bonus_pct": 50},
    ]
}

TABLES = ("transactions", "entries", "earnings", "card_spend", "holds", "idempotency_keys")


async def _rows(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as conn:
        counts = {
            t: (await conn.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one() for t in TABLES
        }
        counts["open_holds"] = (
            await conn.execute(text("SELECT count(*) FROM holds WHERE status = 'open'"))
        ).scalar_one()
        counts["balances"] = [
            tuple(r)
            for r in await conn.execute(
                text("SELECT id, balance, held FROM accounts WHERE kind = 'card' ORDER BY id")
            )
        ]
        counts["tiers"] = [
            tuple(r) for r in await conn.execute(text("SELECT id, tier FROM cards ORDER BY id"))
        ]
    return counts


def _purchase(card: str, amount: int, **extra: Any) -> dict[str, Any]:
    return {"card_number": card, "amount": amount, "currency": "EUR", **extra}


async def test_a_preview_earns_what_the_posting_then_earns_and_writes_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator, excluded_skus=["GIFT"])
    assert (await client.put("/v1/tiers", json=LADDER, headers=operator)).status_code == 200
    card = (await issue_card(client, operator))["card_number"]
    body = _purchase(
        card,
        12_000,
        lines=[{"sku": "SHOE", "amount": 10_000}, {"sku": "GIFT", "amount": 2_000}],
        redeemed_amount=1_200,
    )
    for _ in range(2):  # the first purchase crosses into gold; the second earns the bonus
        before = await _rows(engine)
        preview = await client.post("/v1/accruals/preview", json=body, headers=till)
        assert preview.status_code == 200, preview.text
        assert await _rows(engine) == before
        posted = await client.post(
            "/v1/accruals",
            json={**body, "kind": "purchase", "reference": idem()["Idempotency-Key"]},
            headers={**till, **idem()},
        )
        assert posted.status_code == 201, posted.text
        for field in ("card_number", "partner_id", "eligible_amount", "earned", "applied", "tier"):
            assert preview.json()[field] == posted.json()[field], field
    # 10_000 of 12_000 earn, less a tenth paid with points: 9_000 eligible, 90 points.
    assert preview.json()["eligible_amount"] == 9_000
    assert preview.json()["earned"]["points"] == 90 + 45
    assert preview.json()["tier"] == {"code": "gold", "upgraded_from": None}
    assert (await client.get("/v1/audit", headers=operator)).json()["ok"] is True


async def test_a_preview_is_refused_as_the_posting_would_be(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    other, _ = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    before = await _rows(engine)
    cases = [
        (till, _purchase("79927398713", 100), 404, "card_not_found"),
        (till, _purchase(card, 100, currency="USD"), 422, "currency_mismatch"),
        (till, _purchase(card, 100, partner_id=other["id"]), 403, "forbidden"),
        (operator, _purchase(card, 100), 422, "partner_required"),
        (till, _purchase(card, 100, redeemed_amount=101), 422, "validation_error"),
        (till, _purchase(card, 100, lines=[{"sku": "A", "amount": 99}]), 422, "validation_error"),
        (till, {**_purchase(card, 100), "reference": "R-1"}, 422, "validation_error"),
        ({"Authorization": "Bearer nope"}, _purchase(card, 100), 401, "unauthorized"),
    ]
    for headers, body, status, code in cases:
        r = await client.post("/v1/accruals/preview", json=body, headers=headers)
        assert (r.status_code, r.json()["code"]) == (status, code), (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    r = await client.post(f"/v1/cards/{card}/block", headers=operator)
    assert r.status_code == 200, r.text
    r = await client.post("/v1/accruals/preview", json=_purchase(card, 100), headers=till)
    assert (r.status_code, r.json()["code"]) == (409, "card_blocked")
    after = await _rows(engine)
    assert {k: v for k, v in after.items() if k != "tiers"} == {
        k: v for k, v in before.items() if k != "tiers"
    }
    assert partner["id"]


async def test_a_preview_keeps_nothing_it_released_on_the_way(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """The engine releases a card's lapsed holds before applying rules; in a preview that is
    rolled back with the rest: the hold is still open, for the sweep or the next posting."""
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    hold = {"card_number": card, "asset": "points", "amount": 60, "reference": "order-1"}
    r = await client.post("/v1/holds", json=hold, headers={**till, **idem()})
    assert r.status_code == 201, r.text
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": r.json()["id"]},
        )
    before = await _rows(engine)
    preview = await client.post("/v1/accruals/preview", json=_purchase(card, 1_000), headers=till)
    assert preview.status_code == 200, preview.text
    assert preview.json()["earned"] == {"points": 10, "cashback": 50}
    assert await _rows(engine) == before
    assert before["open_holds"] == 1

"""Stamp cards: every Nth qualifying purchase at a partner earns a reward."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.rules.review import review
from tests.conftest import idem
from tests.factories.cards import issue_card
from tests.factories.partners import partner_with_key


def _campaign(partner_id: str, **extra: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "code": "coffee",
        "name": "Tenth coffee free",
        "kind": "stamps",
        "stamps_needed": 10,
        "bonus_points": 500,
        "min_amount": 1_000,
        "partner_id": partner_id,
        "starts_at": (now - timedelta(days=1)).isoformat(),
        "ends_at": (now + timedelta(days=1)).isoformat(),
        **extra,
    }


async def _buy(client: AsyncClient, till: dict[str, str], card: str, amount: int) -> Any:
    body = {
        "kind": "purchase",
        "card_number": card,
        "amount": amount,
        "currency": "EUR",
        "reference": idem()["Idempotency-Key"],
    }
    r = await client.post("/v1/accruals", json=body, headers={**till, **idem()})
    assert r.status_code == 201, r.text
    return r.json()


def _stamp(answer: Any) -> int | None:
    """The stamp card's points on this purchase; None: no stamp."""
    rows = [a for a in answer["applied"] if a["rule"] == "campaign"]
    return rows[0]["points"] if rows else None


async def _stamps(engine: AsyncEngine, card: str) -> int | None:
    async with engine.connect() as conn:
        return (
            await conn.execute(
                text(
                    "SELECT s.stamps FROM card_stamps s JOIN cards c ON c.id = s.card_id"
                    " WHERE c.card_number = :n"
                ),
                {"n": card},
            )
        ).scalar_one_or_none()


async def _audit_ok(client: AsyncClient, operator: dict[str, str]) -> None:
    assert (await client.get("/v1/audit", headers=operator)).json()["ok"] is True


async def test_buy_nine_and_the_tenth_earns_the_reward(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    _, elsewhere = await partner_with_key(app, client, operator)
    r = await client.post("/v1/campaigns", json=_campaign(partner["id"]), headers=operator)
    assert r.status_code == 201, r.text
    card = (await issue_card(client, operator))["card_number"]

    assert _stamp(await _buy(client, till, card, 999)) is None  # under the minimum
    assert _stamp(await _buy(client, elsewhere, card, 5_000)) is None  # another partner
    for n in range(1, 10):
        assert _stamp(await _buy(client, till, card, 1_000)) == 0
        assert await _stamps(engine, card) == n
    tenth = await _buy(client, till, card, 1_000)
    assert _stamp(tenth) == 500
    assert tenth["earned"]["points"] == 10 + 500
    assert await _stamps(engine, card) == 0
    assert _stamp(await _buy(client, till, card, 1_000)) == 0
    assert await _stamps(engine, card) == 1
    await _audit_ok(client, operator)


async def test_stamps_under_concurrency_reward_every_nth_exactly(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    campaign = _campaign(partner["id"], stamps_needed=5)
    assert (await client.post("/v1/campaigns", json=campaign, headers=operator)).status_code == 201
    card = (await issue_card(client, operator))["card_number"]
    answers = await asyncio.gather(*(_buy(client, till, card, 1_000) for _ in range(22)))
    rewards = [_stamp(a) for a in answers]
    assert rewards.count(500) == 4 and rewards.count(0) == 18
    assert await _stamps(engine, card) == 2
    await _audit_ok(client, operator)


async def test_a_returned_purchase_that_earned_a_tier_upgrade_and_a_stamp(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """The full return takes back its stamp and its qualifying spend at once; the card keeps
    the tier until the review moves it down. A partial return keeps the stamp."""
    partner, till = await partner_with_key(app, client, operator)
    ladder = {
        "tiers": [
            {"code": "basic", "name": "Basic", "threshold": 0},
            {"code": "gold", "name": "Gold", "threshold": 5_000, "points_bonus_pct": 50},
        ]
    }
    assert (await client.put("/v1/tiers", json=ladder, headers=operator)).status_code == 200
    assert (
        await client.post("/v1/campaigns", json=_campaign(partner["id"]), headers=operator)
    ).status_code == 201
    card = (await issue_card(client, operator))["card_number"]
    kept = await _buy(client, till, card, 1_000)
    big = await _buy(client, till, card, 6_000)
    assert big["tier"] == {"code": "gold", "upgraded_from": "basic"}
    assert (_stamp(kept), _stamp(big), await _stamps(engine, card)) == (0, 0, 2)

    r = await client.post(
        f"/v1/accruals/{kept['transaction_id']}/refunds",
        json={"amount": 500},
        headers={**till, **idem()},
    )
    assert r.status_code == 201, r.text
    assert await _stamps(engine, card) == 2  # a partial return keeps the stamp

    r = await client.post(
        f"/v1/accruals/{big['transaction_id']}/refunds",
        json={"amount": 6_000},
        headers={**till, **idem()},
    )
    assert r.status_code == 201, r.text
    assert r.json()["taken_back"] == {"points": 60, "cashback": 300}
    assert await _stamps(engine, card) == 1
    view = (await client.get(f"/v1/cards/{card}", headers=operator)).json()["tier"]
    assert (view["code"], view["qualifying_spend"]) == ("gold", 500)
    assert await review(app.state.engine, app.state.program) == 1
    view = (await client.get(f"/v1/cards/{card}", headers=operator)).json()["tier"]
    assert view["code"] == "basic"
    await _audit_ok(client, operator)


async def test_a_replacement_card_keeps_the_stamps(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    campaign = _campaign(partner["id"], stamps_needed=3)
    assert (await client.post("/v1/campaigns", json=campaign, headers=operator)).status_code == 201
    old = (await issue_card(client, operator))["card_number"]
    for _ in range(2):
        await _buy(client, till, old, 1_000)
    r = await client.post(f"/v1/cards/{old}/replace", json={}, headers={**operator, **idem()})
    assert r.status_code == 201, r.text
    new = r.json()["new_card"]["card_number"]
    assert (await _stamps(engine, old), await _stamps(engine, new)) == (None, 2)
    assert _stamp(await _buy(client, till, new, 1_000)) == 500
    await _audit_ok(client, operator)


async def test_a_stamp_card_belongs_to_a_partner(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    partner, _ = await partner_with_key(app, client, operator)
    bad = [
        {k: v for k, v in _campaign(partner["id"]).items() if k != "partner_id"},
        {k: v for k, v in _campaign(partner["id"]).items() if k != "stamps_needed"},
        _campaign(partner["id"], stamps_needed=1),
        _campaign(partner["id"], points_pct=50),
        _campaign(partner["id"], categories=["coffee"]),
    ]
    for body in bad:
        r = await client.post("/v1/campaigns", json=body, headers=operator)
        assert (r.status_code, r.json()["code"]) == (422, "validation_error"), body
    assert (await client.get("/v1/campaigns", headers=operator)).json() == []

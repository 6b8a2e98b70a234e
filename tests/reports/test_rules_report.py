"""GET /v1/reports/rules: what each rule granted over a period, as the accruals recorded it."""

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import idem
from tests.factories.cards import issue_card
from tests.factories.partners import partner_with_key

LADDER = {
    "tiers": [
        {"code": "basic", "name": "Basic", "threshold": 0},
        {"code": "gold", "name": "Gold", "threshold": 1, "points_bonus_pct": 10},
    ]
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


async def test_each_rule_reports_what_its_purchases_recorded(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    shop, shop_till = await partner_with_key(app, client, operator, name="Shop")
    gym, gym_till = await partner_with_key(app, client, operator, name="Gym")
    assert (await client.put("/v1/tiers", json=LADDER, headers=operator)).status_code == 200
    now = datetime.now(UTC)
    campaign = {
        "code": "double-shop",
        "name": "Double at the shop",
        "kind": "multiplier",
        "points_pct": 100,
        "starts_at": (now - timedelta(days=1)).isoformat(),
        "ends_at": (now + timedelta(days=1)).isoformat(),
        "partner_id": shop["id"],
    }
    assert (await client.post("/v1/campaigns", json=campaign, headers=operator)).status_code == 201
    cards = [(await issue_card(client, operator))["card_number"] for _ in range(3)]

    answers = []
    for card in cards:
        answers.append(await _buy(client, shop_till, card, 10_000))  # basic: base + campaign
        answers.append(await _buy(client, shop_till, card, 10_000))  # gold: + tier
    answers.append(await _buy(client, gym_till, cards[0], 5_000))

    report = (await client.get("/v1/reports/rules", headers=operator)).json()
    assert report["currency"] == "EUR"
    by_rule = {(r["rule"], r["rule_ref"]): r for r in report["rules"]}
    expected: dict[tuple[str, str], dict[str, Any]] = {}
    for answer in answers:
        for applied in answer["applied"]:
            row = expected.setdefault(
                (applied["rule"], applied["rule_ref"]),
                {"points": 0, "cashback": 0, "purchases": 0, "cards": set()},
            )
            row["points"] += applied["points"]
            row["cashback"] += applied["cashback"]
            row["purchases"] += 1
            row["cards"].add(answer["card_number"])
    assert set(by_rule) == set(expected)
    for key, row in expected.items():
        got = by_rule[key]
        assert (got["points"], got["cashback"], got["purchases"], got["cards"]) == (
            row["points"],
            row["cashback"],
            row["purchases"],
            len(row["cards"]),
        ), key
    assert by_rule[("base", shop["id"])]["name"] == "Shop"
    assert by_rule[("base", gym["id"])]["name"] == "Gym"
    assert by_rule[("campaign", "double-shop")]["name"] == "Double at the shop"
    assert by_rule[("campaign", "double-shop")]["points"] == 6 * 100
    assert by_rule[("tier", "gold")]["points"] == 3 * 10 + 5  # the gym purchase too
    assert by_rule[("tier", "gold")]["cards"] == 3

    # A rule changed later does not rewrite what it granted.
    rule = {"earn_rate": {"points": 5, "per_amount": 100}, "cashback_bps": 0}
    r = await client.put(f"/v1/partners/{shop['id']}/earn-rule", json=rule, headers=operator)
    assert r.status_code == 200, r.text
    again = (await client.get("/v1/reports/rules", headers=operator)).json()
    assert again["rules"] == report["rules"]

    # The period counts by posting time.
    async with engine.connect() as conn:
        first = (await conn.execute(text("SELECT min(posted_at) FROM transactions"))).scalar_one()
    params = {"since": (first - timedelta(days=2)).isoformat(), "until": first.isoformat()}
    before = (await client.get("/v1/reports/rules", params=params, headers=operator)).json()
    assert before["rules"] == []


async def test_the_report_is_the_operators(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    _, till = await partner_with_key(app, client, operator)
    r = await client.get("/v1/reports/rules", headers=till)
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    now = datetime.now(UTC)
    params = {"since": now.isoformat(), "until": (now - timedelta(days=1)).isoformat()}
    r = await client.get("/v1/reports/rules", params=params, headers=operator)
    assert (r.status_code, r.json()["code"]) == (422, "invalid_period")
    naive = {"since": "2026-01-01T00:00:00"}
    r = await client.get("/v1/reports/rules", params=naive, headers=operator)
    assert (r.status_code, r.json()["code"]) == (422, "validation_error")

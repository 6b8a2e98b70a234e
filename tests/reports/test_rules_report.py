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


async def test_each_rule_is_valued_at_the_issue_price_its_purchases_recorded(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    from tests.agreements.test_prices import price_body, set_price

    shop, till = await partner_with_key(app, client, operator, name="Shop")
    plain, plain_till = await partner_with_key(app, client, operator, name="Unpriced")
    card = (await issue_card(client, operator))["card_number"]
    await set_price(client, operator, shop["id"], price_body(1_250, 900))
    await _buy(client, till, card, 10_000)  # 100 points, 500 cashback at 1.25 cents a point
    await set_price(client, operator, shop["id"], price_body(2_000, 900))
    await _buy(client, till, card, 10_100)  # 101 points, 505 cashback at 2 cents
    await _buy(client, plain_till, card, 10_000)

    r = await client.get("/v1/reports/rules", headers=operator)
    assert r.status_code == 200, r.text
    by_ref = {row["rule_ref"]: row for row in r.json()["rules"]}
    shop_row, plain_row = by_ref[shop["id"]], by_ref[plain["id"]]
    # 100 * 1.25 + 101 * 2 = 327 cents: rounded once, over the rule's purchases.
    assert (shop_row["points"], shop_row["points_value"], shop_row["unpriced_points"]) == (
        201,
        327,
        0,
    )
    assert shop_row["cost"] == 327 + 1_005
    assert (plain_row["points_value"], plain_row["unpriced_points"]) == (0, 100)

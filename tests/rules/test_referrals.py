"""Referral campaigns: a card issued as referred by another earns `bonus_points` on its first
purchase, and the referring card `referrer_points`, in an award of its own (the referrer's
accounts are locked with the new card's until that first purchase)."""

import asyncio
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.factories.cards import issue_card
from tests.factories.partners import partner_with_key
from tests.holds.test_holds import history
from tests.ledger.helpers_ledger import scalar
from tests.rules.test_campaigns import (
    books_ok,
    buy,
    campaign_body,
    campaign_rows,
    create_campaign,
    get_campaign,
    post_purchase,
)


def referral_body(code: str, bonus: int, referrer: int, **overrides: Any) -> dict[str, Any]:
    body = campaign_body(
        code, kind="referral", bonus_points=bonus, referrer_points=referrer, **overrides
    )
    del body["points_pct"]
    return body


async def points(client: AsyncClient, headers: dict[str, str], card: str) -> int:
    r = await client.get(f"/v1/cards/{card}/balance", headers=headers)
    assert r.status_code == 200, r.text
    value: int = r.json()["points"]
    return value


async def test_the_first_purchase_of_a_referred_card_rewards_both_cards_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    referrer = (await issue_card(client, operator))["card_number"]
    card = await issue_card(client, operator, referred_by=referrer)
    assert card["referred_by"] == referrer
    campaign = await create_campaign(client, operator, referral_body("friends", 50, 100))
    assert campaign["referrer_points"] == 100

    first = await buy(client, till, card["card_number"], 1_000)  # 10 base points
    second = await buy(client, till, card["card_number"], 1_000)

    assert campaign_rows(first) == [("friends", 1, 50)]
    assert first["earned"]["points"] == 60
    assert campaign_rows(second) == []
    assert await points(client, operator, referrer) == 100
    [(kind, amount, cashback, description)] = await history(client, operator, referrer)
    assert (kind, amount, cashback) == ("award", 100, 0)
    assert description == f"referral: card {card['card_number']} made its first purchase"
    assert (await get_campaign(client, operator, campaign["id"]))["spent_points"] == 150
    # The referrer is no longer locked with the new card's postings.
    open_ = await scalar(
        engine,
        f"SELECT referral_open FROM cards WHERE card_number = '{card['card_number']}'",
    )
    assert open_ is False
    await books_ok(client, operator, engine)


async def test_a_card_not_referred_or_bought_before_the_campaign_gets_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    referrer = (await issue_card(client, operator))["card_number"]
    early = (await issue_card(client, operator, referred_by=referrer))["card_number"]
    plain = (await issue_card(client, operator))["card_number"]
    await buy(client, till, early, 1_000)  # before any campaign: the referral lapses
    await create_campaign(client, operator, referral_body("friends", 50, 100))

    assert campaign_rows(await buy(client, till, early, 1_000)) == []
    assert campaign_rows(await buy(client, till, plain, 1_000)) == []
    assert await points(client, operator, referrer) == 0
    await books_ok(client, operator, engine)


async def test_the_budget_caps_both_bonuses_together(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    referrer = (await issue_card(client, operator))["card_number"]
    cards = [
        (await issue_card(client, operator, referred_by=referrer))["card_number"] for _ in range(3)
    ]
    await create_campaign(client, operator, referral_body("friends", 50, 100, budget_points=200))

    answers = [await buy(client, till, card, 1_000) for card in cards]

    # 150 for the first; the second gets its 50 and the referrer what is left (0 for the third).
    assert [campaign_rows(a) for a in answers] == [[("friends", 1, 50)], [("friends", 1, 50)], []]
    assert await points(client, operator, referrer) == 100
    assert await scalar(engine, "SELECT spent_points FROM campaigns") == 200
    await books_ok(client, operator, engine)


async def test_racing_first_purchases_of_cards_one_customer_referred_pay_each_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    referrer = (await issue_card(client, operator))["card_number"]
    cards = [
        (await issue_card(client, operator, referred_by=referrer))["card_number"] for _ in range(6)
    ]
    await create_campaign(client, operator, referral_body("friends", 50, 100))

    results = await asyncio.gather(
        *(post_purchase(client, till, card, 1_000) for card in cards for _ in range(2)),
        *(post_purchase(client, till, referrer, 1_000) for _ in range(4)),
    )

    assert [r.status_code for r in results] == [201] * 16
    bonuses = [campaign_rows(r.json()) for r in results[:12]]
    assert sorted(map(len, bonuses)) == [0] * 6 + [1] * 6
    # Its own four purchases (10 points each) and one bonus per card it referred.
    assert await points(client, operator, referrer) == 4 * 10 + 6 * 100
    await books_ok(client, operator, engine)


async def test_a_blocked_referrer_gets_nothing_and_the_new_card_still_does(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    referrer = (await issue_card(client, operator))["card_number"]
    card = (await issue_card(client, operator, referred_by=referrer))["card_number"]
    await create_campaign(client, operator, referral_body("friends", 50, 100))
    r = await client.post(f"/v1/cards/{referrer}/block", headers=operator)
    assert r.status_code == 200, r.text

    assert campaign_rows(await buy(client, till, card, 1_000)) == [("friends", 1, 50)]
    assert await points(client, operator, referrer) == 0
    await books_ok(client, operator, engine)


async def test_referral_input_is_checked(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    r = await client.post("/v1/cards", json={"referred_by": "79927398713"}, headers=operator)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "referrer_not_found"
    r = await client.post("/v1/cards", json={"referred_by": "1234"}, headers=operator)
    assert (r.status_code, r.json()["code"]) == (422, "validation_error")
    for body in (
        referral_body("nothing", 0, 0),
        {**referral_body("pct", 50, 100), "points_pct": 10},
        {**campaign_body("mult"), "referrer_points": 10},
        referral_body("neg", 50, -1),
    ):
        r = await client.post("/v1/campaigns", json=body, headers=operator)
        assert (r.status_code, r.json()["code"]) == (422, "validation_error"), body

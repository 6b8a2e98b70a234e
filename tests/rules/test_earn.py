"""What a purchase earns: unit tests of app/rules/earn.py, and earning nothing over HTTP."""

from fractions import Fraction

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.schemas import MAX_AMOUNT
from app.rules.earn import Earned, EarnRates, earn_for_purchase
from tests.conftest import idem
from tests.factories.cards import issue_card
from tests.factories.partners import partner_with_key


@pytest.mark.parametrize(
    ("amount", "points", "per_amount", "expected"),
    [
        (199, 1, 100, 1),
        (99, 1, 100, 0),
        (100, 1, 100, 1),
        (200, 1, 100, 2),
        (299, 1, 100, 2),
        (1, 1, 100, 0),
        (9_999, 1, 10_000, 0),
        (10_000, 1, 10_000, 1),
        (333, 3, 1_000, 0),  # 0.999 points
        (334, 3, 1_000, 1),  # 1.002 points
        (7, 5, 3, 11),  # 11.67
        (5_000, 0, 100, 0),
    ],
)
def test_points_round_down(amount: int, points: int, per_amount: int, expected: int) -> None:
    earned = earn_for_purchase(amount, EarnRates(points, per_amount, 0))
    assert earned == Earned(points=expected, cashback=0)


@pytest.mark.parametrize(
    ("amount", "bps", "expected"),
    [
        (1, 333, 0),
        (30, 333, 0),  # 0.999
        (31, 333, 1),  # 1.0323
        (10_000, 333, 333),
        (9_999, 10_000, 9_999),  # 100%
        (199, 50, 0),
        (200, 50, 1),
        (12_345, 0, 0),
    ],
)
def test_cashback_rounds_down(amount: int, bps: int, expected: int) -> None:
    earned = earn_for_purchase(amount, EarnRates(0, 100, bps))
    assert earned == Earned(points=0, cashback=expected)


def test_points_and_cashback_together() -> None:
    assert earn_for_purchase(19_999, EarnRates(1, 100, 500)) == Earned(points=199, cashback=999)


def test_never_over_credits_and_never_loses_a_whole_unit() -> None:
    rates = [EarnRates(1, 100, 333), EarnRates(3, 7, 1), EarnRates(7, 1_000, 9_999)]
    for rate in rates:
        for amount in range(1, 2_000):
            earned = earn_for_purchase(amount, rate)
            exact_points = Fraction(amount * rate.points, rate.per_amount)
            exact_cashback = Fraction(amount * rate.cashback_bps, 10_000)
            assert earned.points <= exact_points < earned.points + 1
            assert earned.cashback <= exact_cashback < earned.cashback + 1


def test_largest_amounts_are_exact() -> None:
    earned = earn_for_purchase(MAX_AMOUNT, EarnRates(1_000_000, 1, 10_000))
    assert earned == Earned(points=MAX_AMOUNT * 1_000_000, cashback=MAX_AMOUNT)
    # One less than a full step at a huge rate still rounds down.
    earned = earn_for_purchase(10**12 - 1, EarnRates(1, 10**12, 0))
    assert earned.points == 0


def test_results_are_ints() -> None:
    earned = earn_for_purchase(12_345, EarnRates(7, 300, 275))
    assert type(earned.points) is int
    assert type(earned.cashback) is int


async def test_purchase_too_small_to_earn_answers_200_and_posts_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(
        app, client, operator, earn_rate={"points": 1, "per_amount": 100}, cashback_bps=333
    )
    card = await issue_card(client, operator)
    response = await client.post(
        "/v1/accruals",
        json={
            "kind": "purchase",
            "card_number": card["card_number"],
            "amount": 29,  # 0.29 points, 0.9657 cents
            "currency": "EUR",
            "reference": "R-small",
        },
        headers={**till, **idem()},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["transaction_id"] is None
    assert body["posted_at"] is None
    assert body["earned"] == {"points": 0, "cashback": 0}
    assert body["balance"] == {"points": 0, "cashback": 0}
    assert body["partner_id"] == partner["id"]
    assert body["kind"] == "purchase"

    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM transactions"))).scalar_one() == 0
        assert (await conn.execute(text("SELECT count(*) FROM entries"))).scalar_one() == 0
    history = await client.get(f"/v1/cards/{card['card_number']}/transactions", headers=operator)
    assert history.json() == {"items": [], "next_cursor": None}


async def test_purchase_earning_only_cashback_posts_only_cashback(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(
        app, client, operator, earn_rate={"points": 1, "per_amount": 100}, cashback_bps=500
    )
    card = await issue_card(client, operator)
    response = await client.post(
        "/v1/accruals",
        json={
            "kind": "purchase",
            "card_number": card["card_number"],
            "amount": 99,  # 0.99 points, 4.95 cents
            "currency": "EUR",
            "reference": "R-1",
        },
        headers={**till, **idem()},
    )
    assert response.status_code == 201, response.text
    assert response.json()["earned"] == {"points": 0, "cashback": 4}
    assert response.json()["balance"] == {"points": 0, "cashback": 4}
    async with engine.connect() as conn:
        assets = (await conn.execute(text("SELECT DISTINCT asset FROM entries"))).scalars().all()
    assert assets == ["cashback"]


async def test_purchase_earns_rounded_down_over_http(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    _, till = await partner_with_key(
        app, client, operator, earn_rate={"points": 1, "per_amount": 100}, cashback_bps=333
    )
    card = await issue_card(client, operator)
    response = await client.post(
        "/v1/accruals",
        json={
            "kind": "purchase",
            "card_number": card["card_number"],
            "amount": 199,
            "currency": "EUR",
            "reference": "R-1",
        },
        headers={**till, **idem()},
    )
    assert response.status_code == 201, response.text
    # 1.99 points -> 1; 199 * 3.33% = 6.6267 cents -> 6.
    assert response.json()["earned"] == {"points": 1, "cashback": 6}
    assert response.json()["balance"] == {"points": 1, "cashback": 6}

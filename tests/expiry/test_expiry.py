"""Points expire a set time after the day they were earned (here: one month), oldest first.

Expired points stop counting at once, before anything posts their expiry; the run posts one
`expiry` transaction per card into the breakage account, once however often it runs."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from tests.expiry.helpers import award, balance, breakage, days_ago, expire, expiries, lots
from tests.factories.cards import issue_card
from tests.factories.postings import redeem


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"points_expiry_months": 1})


async def test_points_past_their_day_stop_counting_and_the_run_posts_them_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    card = (await issue_card(client, operator))["card_number"]
    await award(client, operator, card, 30)
    # Sent late by an offline till: earned 40 days ago, so already expired.
    await award(client, operator, card, 100, occurred_at=days_ago(40))
    [(on, amount)] = [lot for lot in await lots(engine, card) if lot[0] > days_ago(0).date()]

    before = await balance(client, operator, card)
    assert before["points"] == 30
    assert before["expiring"] == {"points": 30, "on": on.isoformat()}
    assert amount == 30
    assert await expiries(engine, card) == []

    assert await expire(app) == (1, 100)
    assert await expire(app) == (0, 0)
    assert await expiries(engine, card) == [100]
    assert await breakage(engine) == 100
    assert (await balance(client, operator, card))["points"] == 30
    # The spent lot is gone: only the one still running is left.
    assert await lots(engine, card) == [(on, 30)]


async def test_a_partly_spent_lot_expires_only_what_is_left_of_it(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    card = (await issue_card(client, operator))["card_number"]
    await award(client, operator, card, 100, occurred_at=days_ago(20))
    await award(client, operator, card, 50)
    assert (await redeem(client, operator, card, 30, "R-1")).status_code == 201
    # A month on for the older lot only: 70 of it are left, and they are due.
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE point_lots SET expires_on = expires_on - 31, earned_on = earned_on - 31 "
                "WHERE expires_on = (SELECT min(expires_on) FROM point_lots)"
            )
        )

    assert (await balance(client, operator, card))["points"] == 50
    assert await expire(app) == (1, 70)
    assert await expiries(engine, card) == [70]
    assert (await balance(client, operator, card))["points"] == 50


async def test_spending_takes_the_oldest_points_first(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    card = (await issue_card(client, operator))["card_number"]
    await award(client, operator, card, 100, occurred_at=days_ago(20))
    await award(client, operator, card, 100, occurred_at=days_ago(5))
    [(first, _), (second, _)] = await lots(engine, card)
    assert (await balance(client, operator, card))["expiring"] == {
        "points": 100,
        "on": first.isoformat(),
    }

    assert (await redeem(client, operator, card, 120, "R-1")).status_code == 201

    # The older lot went first, and 20 of the newer one.
    assert (await balance(client, operator, card))["expiring"] == {
        "points": 80,
        "on": second.isoformat(),
    }


async def test_a_spend_is_refused_the_points_that_expired_before_the_run(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    card = (await issue_card(client, operator))["card_number"]
    await award(client, operator, card, 100, occurred_at=days_ago(40))
    await award(client, operator, card, 40)

    refused = await redeem(client, operator, card, 50, "R-1")
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "insufficient_balance"
    assert refused.json()["available"] == 40
    # The refused spend expired the due points itself, as a posting of its own.
    assert await expiries(engine, card) == [100]
    assert (await redeem(client, operator, card, 40, "R-2")).status_code == 201
    assert await expire(app) == (0, 0)
    assert await breakage(engine) == 100


async def test_expiry_racing_redemptions_and_another_run_expires_once_and_never_overspends(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    cards = [(await issue_card(client, operator))["card_number"] for _ in range(6)]
    for card in cards:
        await award(client, operator, card, 60, occurred_at=days_ago(40))
        await award(client, operator, card, 40)

    results = await asyncio.gather(
        expire(app, page=2),
        expire(app, page=3),
        *(redeem(client, operator, card, 40, f"R-{card}-{i}") for card in cards for i in (1, 2)),
    )

    runs, spends = results[:2], results[2:]
    assert sum(points for _, points in runs) <= 6 * 60  # postings may expire some themselves
    assert sorted(r.status_code for r in spends) == [201] * 6 + [422] * 6
    for card in cards:
        assert await expiries(engine, card) == [60]
        assert (await balance(client, operator, card))["points"] == 0
    assert await breakage(engine) == 6 * 60


async def test_points_without_an_expiry_never_expire(
    app: FastAPI,
    client: AsyncClient,
    operator: dict[str, str],
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    card = (await issue_card(client, operator))["card_number"]
    settings.points_expiry_months = 0
    await award(client, operator, card, 100, occurred_at=days_ago(300))

    assert (await balance(client, operator, card))["expiring"] is None
    assert await expire(app) == (0, 0)
    assert (await balance(client, operator, card))["points"] == 100


async def test_a_transfer_takes_the_oldest_lots_along(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    giver = (await issue_card(client, operator))["card_number"]
    taker = (await issue_card(client, operator))["card_number"]
    await award(client, operator, giver, 100, occurred_at=days_ago(20))
    await award(client, operator, giver, 100, occurred_at=days_ago(5))
    [(first, _), (second, _)] = await lots(engine, giver)

    response = await client.post(
        "/v1/transfers",
        json={
            "from_card_number": giver,
            "to_card_number": taker,
            "asset": "points",
            "amount": 150,
            "reason": "gift",
        },
        headers={**operator, "Idempotency-Key": "T-1"},
    )
    assert response.status_code == 201, response.text

    assert await lots(engine, taker) == [(first, 100), (second, 50)]
    assert (await balance(client, operator, giver))["expiring"] == {
        "points": 50,
        "on": second.isoformat(),
    }
    assert (await balance(client, operator, taker))["expiring"] == {
        "points": 100,
        "on": first.isoformat(),
    }


async def test_a_replacement_card_keeps_the_expiry_dates(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    old = (await issue_card(client, operator))["card_number"]
    await award(client, operator, old, 70, occurred_at=days_ago(20))
    [(first, _)] = await lots(engine, old)

    response = await client.post(
        f"/v1/cards/{old}/replace", json={}, headers={**operator, "Idempotency-Key": "X-1"}
    )
    assert response.status_code == 201, response.text
    new = response.json()["new_card"]["card_number"]

    assert await lots(engine, new) == [(first, 70)]
    assert await lots(engine, old) == []
    assert (await balance(client, operator, new))["expiring"] == {
        "points": 70,
        "on": first.isoformat(),
    }


async def test_a_refunded_redemption_puts_points_back_into_the_lots_they_came_from(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    card = (await issue_card(client, operator))["card_number"]
    await award(client, operator, card, 100, occurred_at=days_ago(20))
    await award(client, operator, card, 100, occurred_at=days_ago(5))
    [(first, _), _] = await lots(engine, card)
    spent = await redeem(client, operator, card, 150, "R-1")
    assert spent.status_code == 201, spent.text

    refund = await client.post(
        f"/v1/redemptions/{spent.json()['transaction_id']}/refunds",
        json={"amount": 150, "reason": "order cancelled"},
        headers={**operator, "Idempotency-Key": "F-1"},
    )
    assert refund.status_code == 201, refund.text

    assert (await balance(client, operator, card))["expiring"] == {
        "points": 100,
        "on": first.isoformat(),
    }


async def test_inactive_cards_lose_their_points(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    app.state.settings.points_inactivity_months = 3
    quiet = (await issue_card(client, operator))["card_number"]
    await award(client, operator, quiet, 25)

    # Nothing is inactive yet.
    assert await expire(app) == (0, 0)
    # Four months on, the card has seen no activity for more than three.
    later = datetime.now(UTC) + timedelta(days=4 * 31)
    assert await expire(app, now=later) == (1, 25)
    assert await expire(app, now=later) == (0, 0)
    assert await expiries(engine, quiet) == [25]
    assert (await balance(client, operator, quiet))["points"] == 0

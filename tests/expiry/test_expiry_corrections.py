"""Expiry meets the corrections and the card's life: returns and reversals take points back
(from the oldest lots first, app/expiry/policy.py), holds keep due points out of the run's reach
until released, merges carry the lot dates along, the `expire` command, and the audit.

Points expire a month after the day they were earned (the `settings` override). A lot comes due
by moving its days back with SQL, as test_expiry.py does."""

import asyncio
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from app.cli import cli
from app.core.config import Settings, get_settings
from tests.conftest import idem
from tests.expiry.helpers import award, balance, breakage, days_ago, expire, expiries, lots
from tests.factories.cards import issue_card
from tests.factories.partners import partner_with_key
from tests.factories.postings import redeem
from tests.holds.test_holds import open_hold, void_hold
from tests.ledger.test_returns import buy, ledger_ok, returned_ok, reverse


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"points_expiry_months": 1})


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def age_lot(engine: AsyncEngine, card_number: str, expires_on: date, days: int = 31) -> date:
    """Move one lot of the card (the one expiring on `expires_on`) `days` into the past, both
    its days; returns its new expiry day."""
    async with engine.begin() as conn:
        result = await conn.execute(
            text(
                "UPDATE point_lots SET expires_on = expires_on - CAST(:days AS integer), "
                "earned_on = earned_on - CAST(:days AS integer) "
                "WHERE expires_on = :on "
                "AND card_id = (SELECT id FROM cards WHERE card_number = :n)"
            ),
            {"days": days, "on": expires_on, "n": card_number},
        )
        assert result.rowcount == 1
    return expires_on - timedelta(days=days)


async def personalized_card(client: AsyncClient, operator: dict[str, str], customer: str) -> str:
    card = await issue_card(client, operator, kind="personalized", customer_reference=customer)
    return str(card["card_number"])


async def merge(
    client: AsyncClient, operator: dict[str, str], source: str, target: str
) -> dict[str, Any]:
    r = await client.post(
        f"/v1/cards/{source}/merge",
        json={"into_card_number": target},
        headers={**operator, **idem()},
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# 1. A purchase return ---------------------------------------------------------------------------


async def test_a_return_takes_back_the_oldest_points_so_the_older_lot_no_longer_expires(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    await award(client, operator, card, 100, occurred_at=days_ago(20))
    accrual = await buy(client, till, card, 10_000)  # 100 points, 500 cashback, today
    [(older, _), (newer, _)] = await lots(engine, card)
    assert older < newer
    assert (await balance(client, operator, card))["expiring"] == {
        "points": 100,
        "on": older.isoformat(),
    }

    answer = await returned_ok(client, till, accrual, 10_000)
    assert answer["taken_back"] == {"points": 100, "cashback": 500}
    assert answer["balance"] == {"points": 100, "cashback": 0}

    # First in, first out: what the card still has is its newest lot; the older one is used up.
    after = await balance(client, operator, card)
    assert after["points"] == 100
    assert after["expiring"] == {"points": 100, "on": newer.isoformat()}

    # The older lot's day comes: nothing of it is left to expire.
    await age_lot(engine, card, older)
    assert (await balance(client, operator, card))["points"] == 100
    assert await expire(app) == (0, 0)
    assert await expiries(engine, card) == []
    assert await breakage(engine) == 0
    assert (await balance(client, operator, card))["points"] == 100
    # The spent lot was dropped by the run; the newest one stays.
    assert await lots(engine, card) == [(newer, 100)]
    await ledger_ok(client, operator, engine)


# 2. Reversals after part of the points expired ---------------------------------------------------


async def test_reversing_an_accrual_after_an_older_lot_came_due_expires_that_lot_first(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    await award(client, operator, card, 100, occurred_at=days_ago(20))
    accrual = await buy(client, till, card, 6_000)  # 60 points, 300 cashback
    [(older, _), _] = await lots(engine, card)
    await age_lot(engine, card, older)
    assert (await balance(client, operator, card))["points"] == 60

    r = await reverse(client, till, accrual)
    assert r.status_code == 201, r.text
    assert r.json()["reversed"] == {"points": -60, "cashback": -300}
    # The correction expired the due 100 itself before taking the 60 back: no debt.
    assert r.json()["balance"] == {"points": 0, "cashback": 0}
    assert await expiries(engine, card) == [100]
    after = await balance(client, operator, card)
    assert (after["points"], after["debt"], after["expiring"]) == (
        0,
        {"points": 0, "cashback": 0},
        None,
    )

    assert await expire(app) == (0, 0)
    assert await expiries(engine, card) == [100]
    assert await breakage(engine) == sum(await expiries(engine, card)) == 100
    await ledger_ok(client, operator, engine)


async def test_reversing_an_award_after_part_of_the_points_expired(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    card = (await issue_card(client, operator))["card_number"]
    newer = await award(client, operator, card, 60)
    # Sent late: earned 40 days ago, due already (after the award above, which would have
    # expired it itself).
    await award(client, operator, card, 100, occurred_at=days_ago(40))
    assert await expire(app) == (1, 100)
    assert (await balance(client, operator, card))["points"] == 60

    r = await reverse(client, operator, newer["transaction_id"])
    assert r.status_code == 201, r.text
    assert r.json()["reversed"] == {"points": -60, "cashback": 0}
    assert r.json()["balance"] == {"points": 0, "cashback": 0}

    assert await expire(app) == (0, 0)
    after = await balance(client, operator, card)
    assert (after["points"], after["expiring"]) == (0, None)
    assert await expiries(engine, card) == [100]
    assert await breakage(engine) == 100
    await ledger_ok(client, operator, engine)


async def test_a_clawback_debt_is_never_deepened_by_expiry(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    await award(client, operator, card, 100, occurred_at=days_ago(20))
    accrual = await buy(client, till, card, 6_000)  # 60 points
    [(older, _), (newer, _)] = await lots(engine, card)
    assert (await redeem(client, till, card, 120, "R-1")).status_code == 201

    r = await reverse(client, till, accrual)
    assert r.status_code == 201, r.text
    assert r.json()["balance"]["points"] == -20
    # The older lot's day comes while the card owes points: nothing is due.
    await age_lot(engine, card, older)
    assert await expire(app) == (0, 0)
    after = await balance(client, operator, card)
    assert (after["points"], after["debt"]["points"]) == (-20, 20)
    assert await expiries(engine, card) == []
    assert await breakage(engine) == 0

    # Earnings pay the debt off; what is left is the newest points, and none of it is due.
    fresh = await award(client, operator, card, 50)
    assert fresh["balance"]["points"] == 30
    assert await expire(app) == (0, 0)
    after = await balance(client, operator, card)
    assert (after["points"], after["debt"]["points"]) == (30, 0)
    assert after["expiring"] == {"points": 30, "on": newer.isoformat()}
    await ledger_ok(client, operator, engine)


async def test_a_redemption_reversed_before_its_lots_day_puts_the_points_back_to_expire(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    card = (await issue_card(client, operator))["card_number"]
    await award(client, operator, card, 100, occurred_at=days_ago(20))
    await award(client, operator, card, 50)
    [(older, _), _] = await lots(engine, card)
    spent = await redeem(client, operator, card, 30, "R-1")  # from the older lot
    assert spent.status_code == 201, spent.text

    r = await reverse(client, operator, spent.json()["transaction_id"])
    assert r.status_code == 201, r.text
    assert r.json()["balance"]["points"] == 150
    assert (await balance(client, operator, card))["expiring"] == {
        "points": 100,
        "on": older.isoformat(),
    }

    await age_lot(engine, card, older)
    assert await expire(app) == (1, 100)
    assert (await balance(client, operator, card))["points"] == 50
    assert await breakage(engine) == 100
    await ledger_ok(client, operator, engine)


@pytest.mark.xfail(
    strict=True,
    reason=(
        "Points a reversal (or refund) of a redemption gives back after the day of the lot they "
        "were spent from never expire: the correction first expires what is due and, the card's "
        "points no longer covering the due lot, deletes it (repository.DROP_SPENT); the 30 then "
        "come back with no lot, and policy.due never takes more than expired lots hold. "
        "policy.py says a refund of a spend puts the points back into the lots they were taken "
        "from (as it does a day earlier, the test above): those 30 should be due at once. "
        "Actual: the balance reads 80, and no run ever expires the 30."
    ),
)
async def test_a_redemption_reversed_after_its_lots_day_gives_back_points_that_are_due(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    card = (await issue_card(client, operator))["card_number"]
    await award(client, operator, card, 100, occurred_at=days_ago(20))
    await award(client, operator, card, 50)
    [(older, _), (newer, _)] = await lots(engine, card)
    spent = await redeem(client, operator, card, 30, "R-1")  # from the older lot
    assert spent.status_code == 201, spent.text
    await age_lot(engine, card, older)

    r = await reverse(client, operator, spent.json()["transaction_id"])
    assert r.status_code == 201, r.text
    # The reversal expired the 70 left of the older lot first, then gave the 30 back.
    assert r.json()["balance"]["points"] == 80
    assert await expiries(engine, card) == [70]
    assert await lots(engine, card) == [(newer, 50)]

    # The 30 went back into the lot they came from, whose day came: they are due.
    assert (await balance(client, operator, card))["points"] == 50
    assert await expire(app) == (1, 30)
    assert await breakage(engine) == 100


# 3. Holds -----------------------------------------------------------------------------------------


async def test_points_on_hold_expire_only_once_the_hold_releases_them(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    card = (await issue_card(client, operator))["card_number"]
    await award(client, operator, card, 100, occurred_at=days_ago(20))
    await award(client, operator, card, 50)
    [(older, _), (newer, _)] = await lots(engine, card)
    hold = await open_hold(client, operator, card, 120)
    older = await age_lot(engine, card, older)

    # 100 are due, but only 30 are available: the 120 on hold stay until released.
    before = await balance(client, operator, card)
    assert (before["points"], before["held"]["points"]) == (0, 120)
    assert await expire(app) == (1, 30)
    assert await expire(app) == (0, 0)
    assert await expiries(engine, card) == [30]
    # The due lot is kept: 70 of it are still on the card, on hold.
    assert await lots(engine, card) == [(older, 100), (newer, 50)]

    voided = await void_hold(client, operator, hold["id"])
    assert voided.status_code == 200, voided.text
    assert voided.json()["released"] == 120
    # Of the 120 released, 70 came from the expired lot: only the newest 50 count.
    assert (await balance(client, operator, card))["points"] == 50
    # The void itself expired what it gave back from the due lot.
    assert await expire(app) == (0, 0)
    assert await expiries(engine, card) == [30, 70]
    assert await breakage(engine) == 100
    after = await balance(client, operator, card)
    assert (after["points"], after["held"]["points"]) == (50, 0)
    assert after["expiring"] == {"points": 50, "on": newer.isoformat()}
    assert await lots(engine, card) == [(newer, 50)]
    await ledger_ok(client, operator, engine)


async def test_voiding_a_hold_answers_the_balance_without_the_released_expired_points(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    card = (await issue_card(client, operator))["card_number"]
    await award(client, operator, card, 100, occurred_at=days_ago(20))
    await award(client, operator, card, 50)
    [(older, _), _] = await lots(engine, card)
    hold = await open_hold(client, operator, card, 150)
    await age_lot(engine, card, older)

    voided = await void_hold(client, operator, hold["id"])
    assert voided.status_code == 200, voided.text
    assert (await balance(client, operator, card))["points"] == 50
    assert voided.json()["balance"]["points"] == 50


# 4. Merges ---------------------------------------------------------------------------------------


async def test_a_merge_keeps_the_source_cards_lot_dates_on_the_target(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    source = await personalized_card(client, operator, "cust-1")
    target = await personalized_card(client, operator, "cust-1")
    await award(client, operator, source, 70, occurred_at=days_ago(20))
    await award(client, operator, source, 30, occurred_at=days_ago(10))
    await award(client, operator, target, 40)
    [(first, _), (second, _)] = await lots(engine, source)
    [(own, _)] = await lots(engine, target)

    body = await merge(client, operator, source, target)
    assert body["moved"] == {"points": 100, "cashback": 0}

    assert await lots(engine, source) == []
    assert await lots(engine, target) == [(first, 70), (second, 30), (own, 40)]
    after = await balance(client, operator, target)
    assert after["points"] == 140
    assert after["expiring"] == {"points": 70, "on": first.isoformat()}

    # The source's oldest day comes: its points expire on the target.
    await age_lot(engine, target, first)
    assert await expire(app) == (1, 70)
    assert await expiries(engine, target) == [70]
    assert (await balance(client, operator, target))["points"] == 70
    assert await breakage(engine) == 70
    await ledger_ok(client, operator, engine)


async def test_a_merge_into_a_card_that_spent_newer_points_keeps_the_source_dates(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    source = await personalized_card(client, operator, "cust-2")
    target = await personalized_card(client, operator, "cust-2")
    await award(client, operator, source, 100, occurred_at=days_ago(20))
    await award(client, operator, target, 100)
    assert (await redeem(client, operator, target, 100, "R-1")).status_code == 201
    [(first, _)] = await lots(engine, source)

    body = await merge(client, operator, source, target)
    assert body["moved"] == {"points": 100, "cashback": 0}
    assert (await balance(client, operator, target))["expiring"] == {
        "points": 100,
        "on": first.isoformat(),
    }
    await age_lot(engine, target, first)
    assert await expire(app) == (1, 100)


async def test_a_merge_of_a_card_with_spent_lots_keeps_the_target_dates(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    source = await personalized_card(client, operator, "cust-3")
    target = await personalized_card(client, operator, "cust-3")
    await award(client, operator, target, 100, occurred_at=days_ago(25))
    await award(client, operator, source, 100, occurred_at=days_ago(20))
    assert (await redeem(client, operator, source, 100, "R-1")).status_code == 201
    await award(client, operator, source, 100, occurred_at=days_ago(10))
    [(own, _)] = await lots(engine, target)
    [_, (kept, _)] = await lots(engine, source)

    body = await merge(client, operator, source, target)
    assert body["moved"] == {"points": 100, "cashback": 0}
    after = await balance(client, operator, target)
    assert after["points"] == 200
    assert after["expiring"] == {"points": 100, "on": own.isoformat()}
    await age_lot(engine, target, own)
    assert await expire(app) == (1, 100)
    assert (await balance(client, operator, target))["expiring"] == {
        "points": 100,
        "on": kept.isoformat(),
    }


async def test_a_transfer_to_a_card_that_spent_newer_points_keeps_the_given_dates(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    giver = (await issue_card(client, operator))["card_number"]
    taker = (await issue_card(client, operator))["card_number"]
    await award(client, operator, giver, 100, occurred_at=days_ago(20))
    await award(client, operator, taker, 100)
    assert (await redeem(client, operator, taker, 100, "R-1")).status_code == 201
    [(given, _)] = await lots(engine, giver)
    r = await client.post(
        "/v1/transfers",
        json={
            "from_card_number": giver,
            "to_card_number": taker,
            "asset": "points",
            "amount": 100,
            "reason": "gift",
        },
        headers={**operator, **idem()},
    )
    assert r.status_code == 201, r.text

    assert (await balance(client, operator, taker))["expiring"] == {
        "points": 100,
        "on": given.isoformat(),
    }
    await age_lot(engine, taker, given)
    assert await expire(app) == (1, 100)


# 5. The command ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("fresh_settings")
async def test_the_expire_command(
    database_url: str,
    app: FastAPI,
    client: AsyncClient,
    operator: dict[str, str],
    engine: AsyncEngine,
) -> None:
    first = (await issue_card(client, operator))["card_number"]
    second = (await issue_card(client, operator))["card_number"]
    untouched = (await issue_card(client, operator))["card_number"]
    await award(client, operator, first, 25)
    await award(client, operator, first, 100, occurred_at=days_ago(40))
    await award(client, operator, second, 50, occurred_at=days_ago(35))
    await award(client, operator, untouched, 20, occurred_at=days_ago(20))

    def invoke() -> tuple[int, str]:
        result = CliRunner().invoke(
            cli,
            ["expire"],
            env={
                "DATABASE_URL": database_url,
                "PROGRAM_CURRENCY": "EUR",
                "POINTS_EXPIRY_MONTHS": "1",
                "POINTS_INACTIVITY_MONTHS": "0",
            },
            catch_exceptions=False,
        )
        return result.exit_code, result.output

    try:
        assert await asyncio.to_thread(invoke) == (0, "expired 150 points on 2 cards\n")
        assert await asyncio.to_thread(invoke) == (0, "expired 0 points on 0 cards\n")
    finally:
        get_settings.cache_clear()
    assert await expiries(engine, first) == [100]
    assert await expiries(engine, second) == [50]
    assert await expiries(engine, untouched) == []
    assert [(await balance(client, operator, c))["points"] for c in (first, second, untouched)] == [
        25,
        0,
        20,
    ]
    assert await breakage(engine) == 150
    await ledger_ok(client, operator, engine)


# 6. The audit ------------------------------------------------------------------------------------


async def test_the_audit_finds_the_books_ok_after_expiries(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    by_run = (await issue_card(client, operator))["card_number"]
    by_spend = (await issue_card(client, operator))["card_number"]
    await award(client, operator, by_run, 80, occurred_at=days_ago(40))
    await award(client, operator, by_spend, 15)
    await award(client, operator, by_spend, 60, occurred_at=days_ago(40))
    # A spend expires the due points itself, in an expiry transaction of its own.
    assert (await redeem(client, operator, by_spend, 10, f"R-{uuid.uuid4()}")).status_code == 201
    assert await expiries(engine, by_spend) == [60]
    assert await expire(app) == (1, 80)
    assert await expire(app) == (0, 0)

    r = await client.get("/v1/audit", headers=operator)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["ok"] is True, report
    # 3 awards, 1 redemption and 2 expiries, two entries each.
    assert (report["transactions"], report["entries"]) == (6, 12)
    assert report["asset_totals"] == {"points": 0}
    assert report["card_balance_mismatches"] == []
    assert report["unbalanced_transactions"] == []
    assert await breakage(engine) == 140
    assert [(await balance(client, operator, c))["points"] for c in (by_run, by_spend)] == [0, 5]
    await ledger_ok(client, operator, engine)

"""Returns under real concurrency: requests gathered over the client reach the app's connection
pool at once, and only the card's lock orders them. Whatever the order, returns never add up
past the purchase nor take back more than was earned, no spending is accepted that leaves the
card below zero, and the books balance after every round.

The deterministic interleavings hold the card's account locks in a transaction of the test and
queue requests behind it, in a known order (as tests/cards/test_card_life.py does).
"""

import asyncio
import random
from collections import Counter
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import idem
from tests.factories.cards import issue_card
from tests.factories.locks import queued_behind_lock
from tests.factories.partners import partner_with_key
from tests.factories.postings import redeem
from tests.ledger.test_returns import (
    assert_problem,
    available,
    balance,
    buy,
    give_back,
    ledger_ok,
    reverse,
    transfer,
)

pytestmark = pytest.mark.concurrency


async def after(delay: float, request: Any) -> Any:
    """`request`, sent `delay` seconds from now: spreads a race over the batcher's groups."""
    await asyncio.sleep(delay)
    return await request


async def audit_ok(client: AsyncClient, operator: dict[str, str]) -> None:
    r = await client.get("/v1/audit", headers=operator)
    assert r.status_code == 200 and r.json()["ok"] is True, r.text


def _replace(client: AsyncClient, operator: dict[str, str], card: str) -> Any:
    return client.post(f"/v1/cards/{card}/replace", json={}, headers={**operator, **idem()})


# Returns racing returns -----------------------------------------------------------------------


async def test_partial_returns_racing_past_the_purchase_never_return_more_than_it(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    rng = random.Random(7)
    _, till = await partner_with_key(app, client, operator)
    for round_ in range(4):
        card = (await issue_card(client, operator))["card_number"]
        accrual = await buy(client, till, card, 10_000)  # 100 points, 500 cashback
        # First round: five returns of 4,000 (exactly two fit); then random amounts.
        amounts = [4_000] * 5 if round_ == 0 else [rng.randint(500, 6_000) for _ in range(8)]
        answers: list[Response] = await asyncio.gather(
            *(after(rng.uniform(0, 0.02), give_back(client, till, accrual, a)) for a in amounts)
        )

        accepted = [a for a, r in zip(amounts, answers, strict=True) if r.status_code == 201]
        total = sum(accepted)
        assert total <= 10_000
        assert accepted, "the first return to get the lock fits"
        for amount, r in zip(amounts, answers, strict=True):
            if r.status_code == 201:
                continue
            problem = assert_problem(r, 422, "refund_exceeds_original")
            # Refused only because it did not fit at that moment, and it does not fit now.
            assert problem["returned"] + amount > 10_000, problem
            assert total + amount > 10_000
        if round_ == 0:
            assert len(accepted) == 2
        taken = {
            asset: sum(r.json()["taken_back"][asset] for r in answers if r.status_code == 201)
            for asset in ("points", "cashback")
        }
        assert taken == {"points": 100 * total // 10_000, "cashback": 500 * total // 10_000}
        totals = sorted(r.json()["returned_total"] for r in answers if r.status_code == 201)
        assert totals[-1] == total and len(set(totals)) == len(totals)
        assert await available(client, till, card) == {
            "points": 100 - taken["points"],
            "cashback": 500 - taken["cashback"],
        }
        await audit_ok(client, operator)
    await ledger_ok(client, operator, engine)


async def test_a_return_racing_a_reversal_of_the_same_purchase_one_wins(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    rng = random.Random(11)
    _, till = await partner_with_key(app, client, operator)
    winners: Counter[str] = Counter()
    for _ in range(6):
        card = (await issue_card(client, operator))["card_number"]
        accrual = await buy(client, till, card, 10_000)
        returned, reversed_ = await asyncio.gather(
            after(rng.uniform(0, 0.01), give_back(client, till, accrual, 4_000)),
            after(rng.uniform(0, 0.01), reverse(client, till, accrual)),
        )
        if returned.status_code == 201:
            winners["return"] += 1
            assert_problem(reversed_, 409, "already_refunded")
            assert await available(client, till, card) == {"points": 60, "cashback": 300}
        else:
            winners["reversal"] += 1
            assert reversed_.status_code == 201, reversed_.text
            problem = assert_problem(returned, 409, "already_reversed")
            assert problem["transaction_id"] == reversed_.json()["transaction_id"]
            assert await available(client, till, card) == {"points": 0, "cashback": 0}
    assert sum(winners.values()) == 6
    await ledger_ok(client, operator, engine)


# Spending racing a clawback ------------------------------------------------------------------


async def test_spending_racing_a_clawback_never_overdraws_the_card(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Each round a card that earned 100 points and 500 cashback sees, all at once: three
    redemptions of 30 points, a cashback redemption of 200, a hold of 20 points, a transfer of
    15 points, and a return of half the purchase (taking back 50 points and 250 cashback).
    Whatever the order, every spending accepted left the card at or above zero; the card ends
    at earned - spent - held - taken back (a debt if the return came last)."""
    rng = random.Random(2026)
    _, till = await partner_with_key(app, client, operator)
    sink = (await issue_card(client, operator))["card_number"]
    for round_ in range(8):
        card = (await issue_card(client, operator))["card_number"]
        accrual = await buy(client, till, card, 10_000)
        calls: list[tuple[str, int, Any]] = [
            ("redeem", 30, redeem(client, till, card, 30, f"r{round_}-{i}")) for i in range(3)
        ]
        calls.append(
            ("redeem-cashback", 200, redeem(client, till, card, 200, f"c{round_}", "cashback"))
        )
        calls.append(
            (
                "hold",
                20,
                client.post(
                    "/v1/holds",
                    json={
                        "card_number": card,
                        "asset": "points",
                        "amount": 20,
                        "reference": f"h{round_}",
                    },
                    headers={**till, **idem()},
                ),
            )
        )
        calls.append(("transfer", 15, transfer(client, operator, card, sink, 15)))
        calls.append(("return", 5_000, give_back(client, till, accrual, 5_000)))
        rng.shuffle(calls)
        answers: list[Response] = await asyncio.gather(
            *(after(rng.uniform(0, 0.03), call) for _, _, call in calls)
        )

        spent = {"points": 0, "cashback": 0}
        held = 0
        for (kind, amount, _), r in zip(calls, answers, strict=True):
            if kind == "return":
                assert r.status_code == 201, r.text
                assert r.json()["taken_back"] == {"points": 50, "cashback": 250}
                continue
            asset = "cashback" if kind == "redeem-cashback" else "points"
            if r.status_code in (200, 201):
                after_balance = (
                    r.json()["from_balance"] if kind == "transfer" else r.json()["balance"]
                )
                assert after_balance[asset] >= 0, (kind, r.text)
                if kind == "hold":
                    held += amount
                else:
                    spent[asset] += amount
            else:
                problem = assert_problem(r, 422, "insufficient_balance")
                assert problem["asset"] == asset
                assert problem["available"] < amount, problem
        shown = await balance(client, till, card)
        expected = {
            "points": 100 - spent["points"] - held - 50,
            "cashback": 500 - spent["cashback"] - 250,
        }
        assert {"points": shown["points"], "cashback": shown["cashback"]} == expected
        assert shown["held"] == {"points": held, "cashback": 0}
        assert shown["debt"] == {asset: max(0, -value) for asset, value in expected.items()}
        await audit_ok(client, operator)
    await ledger_ok(client, operator, engine)


async def test_redemptions_racing_returns_of_several_purchases_of_one_card(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    rng = random.Random(99)
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accruals = [await buy(client, till, card, 3_000) for _ in range(4)]  # 30 points each
    calls: list[tuple[str, Any]] = [
        ("redeem", redeem(client, till, card, 7, f"r-{i}")) for i in range(12)
    ]
    calls += [("return", give_back(client, till, a, 1_000)) for a in accruals for _ in range(3)]
    rng.shuffle(calls)
    answers: list[Response] = await asyncio.gather(
        *(after(rng.uniform(0, 0.03), call) for _, call in calls)
    )
    redeemed = 0
    for (kind, _), r in zip(calls, answers, strict=True):
        if kind == "return":
            assert r.status_code == 201, r.text
            assert r.json()["taken_back"]["points"] == 10
        elif r.status_code == 201:
            assert r.json()["balance"]["points"] >= 0, r.text
            redeemed += 7
        else:
            assert_problem(r, 422, "insufficient_balance")
    points = (await available(client, till, card))["points"]
    assert points == 120 - redeemed - 120
    assert redeemed <= 120
    await ledger_ok(client, operator, engine)


# Returns and replacements --------------------------------------------------------------------


async def test_a_return_waiting_for_a_replacement_lands_on_the_new_card(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    old = (await issue_card(client, operator))["card_number"]
    accrual = await buy(client, till, old, 10_000)
    assert (await redeem(client, till, old, 60, "spent")).status_code == 201

    replaced, returned = await queued_behind_lock(
        engine, old, _replace(client, operator, old), give_back(client, till, accrual, 10_000)
    )

    assert replaced.status_code == 201, replaced.text
    new = replaced.json()["new_card"]["card_number"]
    assert replaced.json()["moved"] == {"points": 40, "cashback": 500}
    assert returned.status_code == 201, returned.text
    assert returned.json()["card_number"] == new
    assert returned.json()["balance"] == {"points": -60, "cashback": 0}
    assert (await balance(client, till, new))["debt"] == {"points": 60, "cashback": 0}
    assert await available(client, till, old) == {"points": 0, "cashback": 0}
    await ledger_ok(client, operator, engine)


async def test_a_replacement_waiting_for_a_return_carries_the_debt_over(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    old = (await issue_card(client, operator))["card_number"]
    accrual = await buy(client, till, old, 10_000)
    assert (await redeem(client, till, old, 60, "spent")).status_code == 201

    returned, replaced = await queued_behind_lock(
        engine, old, give_back(client, till, accrual, 10_000), _replace(client, operator, old)
    )

    assert returned.status_code == 201, returned.text
    assert (returned.json()["card_number"], returned.json()["balance"]) == (
        old,
        {"points": -60, "cashback": 0},
    )
    assert replaced.status_code == 201, replaced.text
    new = replaced.json()["new_card"]["card_number"]
    assert replaced.json()["moved"] == {"points": -60, "cashback": 0}
    assert (await balance(client, till, new))["debt"] == {"points": 60, "cashback": 0}
    assert await available(client, till, old) == {"points": 0, "cashback": 0}
    await ledger_ok(client, operator, engine)

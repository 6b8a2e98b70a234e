"""Holds under real concurrency: many requests gathered over the client, each on its own pooled
database connection. Of a capture and a void racing on one hold exactly one wins; holds and
redemptions racing on one card never spend more than it has; an order is held once."""

import asyncio
import random
import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import idem
from tests.factories.cards import funded_card
from tests.factories.partners import partner_with_key
from tests.factories.postings import redeem
from tests.holds.test_holds import (
    account_row,
    amounts,
    assert_balance,
    books_ok,
    capture_hold,
    held_totals,
    open_hold,
    place_hold,
    problem,
    void_hold,
)

pytestmark = pytest.mark.concurrency


async def test_capture_and_void_racing_on_a_hold_exactly_one_wins(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    cards = [(await funded_card(client, operator, 100))["card_number"] for _ in range(3)]
    holds = [await open_hold(client, till, cards[i % 3], 10) for i in range(15)]

    requests: list[tuple[str, str, Any]] = []
    for hold in holds:
        requests.append((hold["id"], "capture", capture_hold(client, till, hold["id"], 7)))
        requests.append((hold["id"], "void", void_hold(client, till, hold["id"])))
    random.Random(7).shuffle(requests)
    answers: list[Response] = await asyncio.gather(*(r[2] for r in requests))

    outcome: dict[str, dict[str, Response]] = {}
    for (hold_id, action, _), answer in zip(requests, answers, strict=True):
        outcome.setdefault(hold_id, {})[action] = answer
    captured = 0
    for hold_id, pair in outcome.items():
        statuses = sorted(a.status_code for a in pair.values())
        assert statuses == [200, 409], {k: v.text for k, v in pair.items()}
        winner = next(a for a, r in pair.items() if r.status_code == 200)
        loser = "void" if winner == "capture" else "capture"
        won = pair[winner].json()
        body = problem(pair[loser], 409, "hold_not_open")
        # The loser names how the hold ended: the winner's status and transaction.
        assert (body["hold_status"], body["settled_by"]) == (won["status"], won["settled_by"])
        if winner == "capture":
            captured += 1
            assert (won["status"], won["captured_amount"], won["released"]) == ("captured", 7, 3)
        else:
            assert (won["status"], won["released"]) == ("voided", 10)
        read = (await client.get(f"/v1/holds/{hold_id}", headers=till)).json()
        assert (read["status"], read["settled_by"]) == (won["status"], won["settled_by"])

    spent = {card: 0 for card in cards}
    for i, hold in enumerate(holds):
        if outcome[hold["id"]]["capture"].status_code == 200:
            spent[cards[i % 3]] += 7
    for card in cards:
        await assert_balance(
            client, till, card, available=amounts(100 - spent[card]), held=amounts(0)
        )
        assert await account_row(engine, card) == (100 - spent[card], 0)
    totals = await held_totals(engine)
    assert totals.get(("partner_redeemed", uuid.UUID(partner["id"]), "points"), 0) == 7 * captured
    assert ("operator_held", None, "points") not in totals
    await books_ok(client, operator, engine)


async def test_captures_racing_on_a_hold_capture_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    hold = await open_hold(client, till, card, 50)

    # Different amounts, so the books tell which one won.
    answers = await asyncio.gather(
        *(capture_hold(client, till, hold["id"], n) for n in range(10, 16))
    )
    winners = [a for a in answers if a.status_code == 200]
    assert len(winners) == 1, [a.text for a in answers]
    won = winners[0].json()
    for loser in answers:
        if loser.status_code != 200:
            body = problem(loser, 409, "hold_not_open")
            assert (body["hold_status"], body["settled_by"]) == ("captured", won["settled_by"])
    amount = won["captured_amount"]
    assert won["released"] == 50 - amount
    await assert_balance(client, till, card, available=amounts(100 - amount), held=amounts(0))
    await books_ok(client, operator, engine)


async def test_holds_and_redemptions_racing_never_spend_more_than_the_card_has(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]

    requests: list[tuple[str, int, Any]] = []
    for i in range(16):
        requests.append(("hold", 10, place_hold(client, till, card, 10)))
        requests.append(("redemption", 7, redeem(client, till, card, 7, f"R-{i}")))
    random.Random(11).shuffle(requests)
    answers: list[Response] = await asyncio.gather(*(r[2] for r in requests))

    held = redeemed = 0
    refused: set[int] = set()
    for (kind, amount, _), answer in zip(requests, answers, strict=True):
        if answer.is_success:
            assert answer.status_code == 201, answer.text
            assert answer.json()["balance"]["points"] >= 0
            if kind == "hold":
                held += amount
            else:
                redeemed += amount
        else:
            problem(answer, 422, "insufficient_balance")
            refused.add(amount)
    # Whatever the interleaving: never more than the card had; and as nothing gave value back,
    # a refused request did not fit then, nor at the end.
    left = 100 - held - redeemed
    assert left >= 0 and refused, (held, redeemed)
    assert all(left < amount for amount in refused), (left, refused)
    await assert_balance(
        client, till, card, available=amounts(100 - held - redeemed), held=amounts(held)
    )
    assert await account_row(engine, card) == (left, held)
    await books_ok(client, operator, engine)


async def test_holds_racing_on_one_card_reserve_at_most_its_balance(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    answers = await asyncio.gather(*(place_hold(client, till, card, 10) for _ in range(25)))
    assert sorted(a.status_code for a in answers) == [201] * 10 + [422] * 15
    for refused in (a for a in answers if a.status_code == 422):
        body = problem(refused, 422, "insufficient_balance")
        assert (body["available"], body["requested"]) == (0, 10)
    assert sorted(a.json()["balance"]["points"] for a in answers if a.status_code == 201) == list(
        range(0, 100, 10)
    )
    await assert_balance(client, till, card, available=amounts(0), held=amounts(100))
    await books_ok(client, operator, engine)


async def test_an_order_racing_on_several_cards_is_held_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    cards = [(await funded_card(client, operator, 100))["card_number"] for _ in range(5)]
    answers = await asyncio.gather(
        *(place_hold(client, till, card, 10, reference="ORDER-RACE") for card in cards)
    )
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409, 409], [
        a.text for a in answers
    ]
    for refused in (a for a in answers if a.status_code == 409):
        problem(refused, 409, "duplicate_reference")
    winner = next(a.json() for a in answers if a.status_code == 201)
    for card in cards:
        held = 10 if card == winner["card_number"] else 0
        await assert_balance(client, till, card, available=amounts(100 - held), held=amounts(held))
    await books_ok(client, operator, engine)


async def test_one_idempotency_key_sent_many_times_at_once_holds_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    key = idem()
    answers = await asyncio.gather(
        *(place_hold(client, till, card, 30, reference="ORDER-1", key=key) for _ in range(6))
    )
    assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") != "true" for a in answers) == 1
    await assert_balance(client, till, card, available=amounts(70), held=amounts(30))
    await books_ok(client, operator, engine)

"""POST /v1/redemptions/{id}/refunds on a hold's capture: an order paid from a hold is refunded,
and what the capture spent goes back to the card's available balance, never more than was
captured. A capture is settled through its hold: it cannot be reversed."""

import asyncio
import random
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import idem
from tests.factories.cards import funded_card, issue_card
from tests.factories.partners import partner_with_key
from tests.ledger.test_return_races import after
from tests.ledger.test_returns import (
    assert_problem,
    available,
    balance,
    buy,
    give_back,
    hold,
    ledger_ok,
    returned_ok,
    reverse,
    snapshot,
)


async def _captured(
    client: AsyncClient,
    headers: dict[str, str],
    card: str,
    amount: int,
    capture: int | None = None,
    asset: str = "points",
) -> tuple[str, str]:
    """A hold of `amount`, captured (all of it, or `capture`): (hold id, capture id)."""
    held = await hold(client, headers, card, amount, asset)
    assert held.status_code == 201, held.text
    hold_id = str(held.json()["id"])
    body = {} if capture is None else {"amount": capture}
    r = await client.post(f"/v1/holds/{hold_id}/capture", json=body, headers={**headers, **idem()})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "captured"
    return hold_id, str(r.json()["settled_by"])


def _refund(
    client: AsyncClient,
    headers: dict[str, str],
    tx: str,
    amount: int,
    key: dict[str, str] | None = None,
    **extra: Any,
) -> Any:
    return client.post(
        f"/v1/redemptions/{tx}/refunds",
        json={"amount": amount, **extra},
        headers={**headers, **(key or idem())},
    )


async def test_a_capture_is_refunded_in_parts_never_more_than_it_spent(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    _, capture = await _captured(client, till, card, 60, capture=40)  # 20 released
    assert await available(client, till, card) == {"points": 60, "cashback": 0}

    r = await _refund(client, till, capture, 15, reason="order cancelled in part")

    assert r.status_code == 201, r.text
    body = r.json()
    assert body == {
        "transaction_id": body["transaction_id"],
        "corrects_id": capture,
        "card_number": card,
        "asset": "points",
        "amount": 15,
        "refunded_total": 15,
        "refundable": 25,
        "balance": {"points": 75, "cashback": 0},
        "posted_at": body["posted_at"],
    }
    tx = (await client.get(f"/v1/transactions/{body['transaction_id']}", headers=till)).json()
    assert (tx["type"], tx["corrects_id"], tx["partner_id"]) == ("refund", capture, partner["id"])
    assert sorted((e["account_kind"], e["amount"]) for e in tx["entries"]) == [
        ("card", 15),
        ("partner_redeemed", -15),
    ]
    shown = await balance(client, till, card)
    assert (shown["points"], shown["held"]) == (75, {"points": 0, "cashback": 0})

    before = await snapshot(engine)
    problem = assert_problem(
        await _refund(client, till, capture, 26), 422, "refund_exceeds_original"
    )
    assert (problem["spent"], problem["refunded"], problem["refundable"]) == (40, 15, 25)
    assert await snapshot(engine) == before

    r = await _refund(client, till, capture, 25)
    assert r.status_code == 201, r.text
    assert (r.json()["refunded_total"], r.json()["refundable"]) == (40, 0)
    assert r.json()["balance"] == {"points": 100, "cashback": 0}
    assert_problem(await _refund(client, till, capture, 1), 422, "refund_exceeds_original")
    assert await available(client, till, card) == {"points": 100, "cashback": 0}
    await ledger_ok(client, operator, engine)


async def test_a_cashback_capture_is_refunded_to_the_cashback(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    await buy(client, till, card, 10_000)  # 100 points, 500 cashback
    _, capture = await _captured(client, till, card, 300, asset="cashback")
    assert await available(client, till, card) == {"points": 100, "cashback": 200}

    r = await _refund(client, till, capture, 300)

    assert r.status_code == 201, r.text
    assert (r.json()["asset"], r.json()["balance"]) == (
        "cashback",
        {"points": 100, "cashback": 500},
    )
    assert_problem(await _refund(client, till, capture, 1), 422, "refund_exceeds_original")
    await ledger_ok(client, operator, engine)


async def test_a_capture_cannot_be_reversed_nor_a_hold_or_release_refunded(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    hold_id, capture = await _captured(client, till, card, 50, capture=30)
    voided = await hold(client, till, card, 10)
    release = (
        await client.post(
            f"/v1/holds/{voided.json()['id']}/void", json={}, headers={**till, **idem()}
        )
    ).json()["settled_by"]

    before = await snapshot(engine)
    for headers in (till, operator):
        assert_problem(await reverse(client, headers, capture), 422, "not_reversible")
        for tx in (hold_id, release):
            assert_problem(await reverse(client, headers, tx), 422, "not_reversible")
            assert_problem(await _refund(client, headers, tx, 1), 422, "not_a_redemption")
            assert_problem(await give_back(client, headers, tx, 1), 422, "not_a_purchase")
        assert_problem(await give_back(client, headers, capture, 1), 422, "not_a_purchase")
    assert await snapshot(engine) == before

    # A refund of the capture still works afterwards.
    assert (await _refund(client, till, capture, 30)).status_code == 201
    assert await available(client, till, card) == {"points": 100, "cashback": 0}
    await ledger_ok(client, operator, engine)


async def test_only_the_holds_partner_or_the_operator_refunds_its_capture(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    _, other_till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    _, partners = await _captured(client, till, card, 20)
    _, operators = await _captured(client, operator, card, 30)  # the operator's own rewards

    before = await snapshot(engine)
    assert_problem(await _refund(client, other_till, partners, 1), 404, "transaction_not_found")
    assert_problem(await _refund(client, till, operators, 1), 404, "transaction_not_found")
    assert await snapshot(engine) == before

    r = await _refund(client, operator, partners, 20)
    assert r.status_code == 201, r.text
    r = await _refund(client, operator, operators, 30)
    assert r.status_code == 201, r.text
    tx = await client.get(f"/v1/transactions/{r.json()['transaction_id']}", headers=operator)
    assert sorted((e["account_kind"], e["amount"]) for e in tx.json()["entries"]) == [
        ("card", 30),
        ("operator_redeemed", -30),
    ]
    assert await available(client, till, card) == {"points": 100, "cashback": 0}
    await ledger_ok(client, operator, engine)


async def test_a_capture_refund_reference_posts_once_and_a_retry_replays(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    _, capture = await _captured(client, till, card, 50)
    key = idem()
    first = await _refund(client, till, capture, 10, key=key, reference="RF-1")
    assert first.status_code == 201, first.text
    after_first = await snapshot(engine)

    again = await _refund(client, till, capture, 10, key=key, reference="RF-1")
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert_problem(
        await _refund(client, till, capture, 10, reference="RF-1"), 409, "duplicate_reference"
    )
    assert await snapshot(engine) == after_first
    assert await available(client, till, card) == {"points": 60, "cashback": 0}


async def test_a_capture_refund_after_a_replacement_lands_on_the_new_card(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Two orders: one captured before the card was lost, one held before and captured after;
    both refunds land on the card that replaced it."""
    _, till = await partner_with_key(app, client, operator)
    old = (await funded_card(client, operator, 100))["card_number"]
    _, before_replace = await _captured(client, till, old, 30)
    open_hold = await hold(client, till, old, 50)
    assert open_hold.status_code == 201, open_hold.text

    r = await client.post(f"/v1/cards/{old}/replace", json={}, headers={**operator, **idem()})
    assert r.status_code == 201, r.text
    new = r.json()["new_card"]["card_number"]
    assert r.json()["moved"] == {"points": 20, "cashback": 0}
    captured = await client.post(
        f"/v1/holds/{open_hold.json()['id']}/capture", json={}, headers={**till, **idem()}
    )
    assert captured.status_code == 200, captured.text
    after_replace = captured.json()["settled_by"]

    for capture, amount, points in ((before_replace, 30, 50), (after_replace, 50, 100)):
        r = await _refund(client, till, capture, amount)
        assert r.status_code == 201, r.text
        assert (r.json()["card_number"], r.json()["balance"]["points"]) == (new, points)
        assert_problem(await _refund(client, till, capture, 1), 422, "refund_exceeds_original")
    assert await available(client, till, old) == {"points": 0, "cashback": 0}
    assert await available(client, till, new) == {"points": 100, "cashback": 0}
    await ledger_ok(client, operator, engine)


async def test_a_capture_refund_pays_off_a_clawback_debt(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """The points a purchase earned were spent through a hold; then the goods came back (a
    debt), then the order paid with the points was cancelled (the debt is paid)."""
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = await buy(client, till, card, 10_000)  # 100 points, 500 cashback
    _, capture = await _captured(client, till, card, 100)
    body = await returned_ok(client, till, accrual, 10_000)
    assert body["debt"] == {"points": 100, "cashback": 0}

    r = await _refund(client, till, capture, 60)
    assert r.status_code == 201, r.text
    assert r.json()["balance"] == {"points": -40, "cashback": 0}
    assert (await balance(client, till, card))["debt"] == {"points": 40, "cashback": 0}
    r = await _refund(client, till, capture, 40)
    assert r.json()["balance"] == {"points": 0, "cashback": 0}
    assert (await balance(client, till, card))["debt"] == {"points": 0, "cashback": 0}
    await ledger_ok(client, operator, engine)


@pytest.mark.concurrency
async def test_capture_refunds_racing_past_the_capture_cannot_all_succeed(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    rng = random.Random(5)
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    _, capture = await _captured(client, till, card, 80, capture=40)
    answers: list[Response] = await asyncio.gather(
        *(after(rng.uniform(0, 0.02), _refund(client, till, capture, 15)) for _ in range(5))
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201, 201, 422, 422, 422], [a.text for a in answers]
    for refused in (a for a in answers if a.status_code == 422):
        assert refused.json()["code"] == "refund_exceeds_original"
    assert await available(client, till, card) == {"points": 90, "cashback": 0}
    await ledger_ok(client, operator, engine)

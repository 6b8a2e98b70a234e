"""The card's life (replace, merge, close, transfer) with open holds and with clawback debt.

Open holds follow the card's value: a replacement or a merge moves them (the hold rows and the
`held` amounts of the accounts) to the card that takes the value over, where they can still be
captured or voided by their id. A card with open holds or with a debt is not empty, so it
cannot be closed; a replacement or a merge carries a debt over.
"""

import uuid
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.holds.expiry import sweep
from tests.conftest import idem
from tests.factories.cards import funded_card, issue_card
from tests.factories.partners import partner_with_key
from tests.factories.postings import redeem
from tests.ledger.test_return_races import queued_behind_lock
from tests.ledger.test_returns import (
    assert_problem,
    available,
    balance,
    buy,
    hold,
    ledger_ok,
    returned_ok,
    snapshot,
    transfer,
)

# Helpers -------------------------------------------------------------------------------------


def _replace(client: AsyncClient, operator: dict[str, str], card: str) -> Any:
    return client.post(f"/v1/cards/{card}/replace", json={}, headers={**operator, **idem()})


def _merge(client: AsyncClient, operator: dict[str, str], card: str, into: str) -> Any:
    return client.post(
        f"/v1/cards/{card}/merge", json={"into_card_number": into}, headers={**operator, **idem()}
    )


def _close(client: AsyncClient, operator: dict[str, str], card: str) -> Any:
    return client.post(f"/v1/cards/{card}/close", headers=operator)


def _capture(
    client: AsyncClient, headers: dict[str, str], hold_id: str, amount: int | None = None
) -> Any:
    body = {} if amount is None else {"amount": amount}
    return client.post(f"/v1/holds/{hold_id}/capture", json=body, headers={**headers, **idem()})


def _void(client: AsyncClient, headers: dict[str, str], hold_id: str) -> Any:
    return client.post(f"/v1/holds/{hold_id}/void", json={}, headers={**headers, **idem()})


async def _held(
    client: AsyncClient, headers: dict[str, str], card: str, amount: int, asset: str = "points"
) -> str:
    r = await hold(client, headers, card, amount, asset)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


_HOLDS = text("""
    SELECT h.id, c.card_number, a.card_id = h.card_id AS same_card, a.asset, h.status
    FROM holds h JOIN cards c ON c.id = h.card_id JOIN accounts a ON a.id = h.account_id
""")

_HELD = text("""
    SELECT a.asset, a.held FROM accounts a JOIN cards c ON c.id = a.card_id
    WHERE c.card_number = :n
""")


async def _holds_by_card(engine: AsyncEngine) -> dict[str, tuple[str, str]]:
    """hold id -> (card number, status), asserting each hold's account is its card's."""
    async with engine.connect() as conn:
        rows = list(await conn.execute(_HOLDS))
    assert all(r.same_card for r in rows), rows
    return {str(r.id): (r.card_number, r.status) for r in rows}


async def _held_column(engine: AsyncEngine, card: str) -> dict[str, int]:
    async with engine.connect() as conn:
        return {r.asset: int(r.held) for r in await conn.execute(_HELD, {"n": card})}


async def _lapse(engine: AsyncEngine, hold_id: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": hold_id},
        )


# Replace and merge move open holds -----------------------------------------------------------


async def test_a_replacement_moves_open_holds_and_they_settle_on_the_new_card(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    old = (await issue_card(client, operator))["card_number"]
    await buy(client, till, old, 10_000)  # 100 points, 500 cashback
    points = await _held(client, till, old, 30)
    cashback = await _held(client, till, old, 200, "cashback")
    own = await _held(client, operator, old, 10)  # the operator's own rewards
    settled = await _held(client, till, old, 5)
    assert (await _void(client, till, settled)).status_code == 200

    r = await _replace(client, operator, old)

    assert r.status_code == 201, r.text
    new = r.json()["new_card"]["card_number"]
    assert r.json()["moved"] == {"points": 60, "cashback": 300}
    holds = await _holds_by_card(engine)
    assert holds == {
        points: (new, "open"),
        cashback: (new, "open"),
        own: (new, "open"),
        settled: (old, "voided"),  # a settled hold stays where it was
    }
    assert await _held_column(engine, old) == {"points": 0, "cashback": 0}
    assert await _held_column(engine, new) == {"points": 40, "cashback": 200}
    shown = await balance(client, till, new)
    assert (shown["points"], shown["cashback"]) == (60, 300)
    assert shown["held"] == {"points": 40, "cashback": 200}
    assert shown["total"] == {"points": 100, "cashback": 500}
    old_shown = await balance(client, till, old)
    assert (old_shown["points"], old_shown["held"]) == (0, {"points": 0, "cashback": 0})
    got = await client.get(f"/v1/holds/{points}", headers=till)
    assert (got.json()["card_number"], got.json()["status"]) == (new, "open")
    await ledger_ok(client, operator, engine)

    # Settled by their ids, on the new card.
    captured = await _capture(client, till, points, 20)
    assert captured.status_code == 200, captured.text
    assert (captured.json()["card_number"], captured.json()["released"]) == (new, 10)
    assert captured.json()["balance"] == {"points": 70, "cashback": 300}
    capture_tx = captured.json()["settled_by"]
    tx = (await client.get(f"/v1/transactions/{capture_tx}", headers=operator)).json()
    assert (tx["type"], tx["card_number"]) == ("capture", new)
    voided = await _void(client, till, cashback)
    assert voided.status_code == 200, voided.text
    assert voided.json()["balance"] == {"points": 70, "cashback": 500}
    assert (await _capture(client, operator, own)).status_code == 200
    assert await available(client, till, new) == {"points": 70, "cashback": 500}
    assert await _held_column(engine, new) == {"points": 0, "cashback": 0}
    assert (await balance(client, till, new))["held"] == {"points": 0, "cashback": 0}
    releases = await _history_types(client, operator, new)
    assert "release" in releases and "capture" in releases
    await ledger_ok(client, operator, engine)


async def _history_types(client: AsyncClient, operator: dict[str, str], card: str) -> list[str]:
    r = await client.get(f"/v1/cards/{card}/transactions", headers=operator)
    assert r.status_code == 200, r.text
    return [i["type"] for i in r.json()["items"]]


async def test_a_merge_moves_open_holds_to_the_card_it_merges_into(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    customer = f"cust-{uuid.uuid4()}"
    source = (await issue_card(client, operator, kind="personalized", customer_reference=customer))[
        "card_number"
    ]
    target = (await issue_card(client, operator, kind="personalized", customer_reference=customer))[
        "card_number"
    ]
    await buy(client, till, source, 10_000)  # 100 points, 500 cashback
    await buy(client, till, target, 2_000)  # 20 points, 100 cashback
    from_source = await _held(client, till, source, 70)
    from_target = await _held(client, till, target, 15)
    cashback = await _held(client, till, source, 500, "cashback")

    r = await _merge(client, operator, source, target)

    assert r.status_code == 200, r.text
    assert r.json()["moved"] == {"points": 30, "cashback": 0}
    assert await _holds_by_card(engine) == {
        from_source: (target, "open"),
        from_target: (target, "open"),
        cashback: (target, "open"),
    }
    assert await _held_column(engine, source) == {"points": 0, "cashback": 0}
    assert await _held_column(engine, target) == {"points": 85, "cashback": 500}
    shown = await balance(client, till, target)
    assert (shown["points"], shown["cashback"], shown["held"]) == (
        35,
        100,
        {"points": 85, "cashback": 500},
    )
    await ledger_ok(client, operator, engine)

    voided = await _void(client, till, from_source)
    assert (voided.json()["card_number"], voided.json()["balance"]["points"]) == (target, 105)
    captured = await _capture(client, till, cashback, 100)
    assert captured.json()["balance"] == {"points": 105, "cashback": 500}
    assert (await _capture(client, till, from_target)).status_code == 200
    assert await available(client, till, target) == {"points": 105, "cashback": 500}
    assert await available(client, till, source) == {"points": 0, "cashback": 0}
    await ledger_ok(client, operator, engine)


async def test_a_capture_waiting_for_a_replacement_settles_on_the_new_card(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    old = (await funded_card(client, operator, 100))["card_number"]
    held = await _held(client, till, old, 60)

    replaced, captured = await queued_behind_lock(
        engine, old, _replace(client, operator, old), _capture(client, till, held, 45)
    )

    assert replaced.status_code == 201, replaced.text
    new = replaced.json()["new_card"]["card_number"]
    assert replaced.json()["moved"] == {"points": 40, "cashback": 0}
    assert captured.status_code == 200, captured.text
    assert (captured.json()["card_number"], captured.json()["released"]) == (new, 15)
    assert captured.json()["balance"] == {"points": 55, "cashback": 0}
    assert await available(client, till, new) == {"points": 55, "cashback": 0}
    assert await available(client, till, old) == {"points": 0, "cashback": 0}
    await ledger_ok(client, operator, engine)


async def test_a_hold_waiting_for_a_replacement_is_refused(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    old = (await funded_card(client, operator, 100))["card_number"]

    replaced, held = await queued_behind_lock(
        engine, old, _replace(client, operator, old), hold(client, till, old, 10)
    )

    assert replaced.status_code == 201, replaced.text
    assert_problem(held, 409, "card_closed")
    new = replaced.json()["new_card"]["card_number"]
    assert (await balance(client, till, new))["held"] == {"points": 0, "cashback": 0}
    assert await available(client, till, new) == {"points": 100, "cashback": 0}
    await ledger_ok(client, operator, engine)


async def test_a_replacement_with_a_lapsed_hold_keeps_its_value(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Whether the replacement releases the lapsed hold first (and moves all of it) or moves
    the hold (and the sweep releases it on the new card), nothing is lost or counted twice."""
    _, till = await partner_with_key(app, client, operator)
    old = (await funded_card(client, operator, 100))["card_number"]
    held = await _held(client, till, old, 60)
    await _lapse(engine, held)
    assert await available(client, till, old) == {"points": 100, "cashback": 0}

    r = await _replace(client, operator, old)

    assert r.status_code == 201, r.text
    new = r.json()["new_card"]["card_number"]
    assert r.json()["moved"]["points"] in (40, 100)
    assert await available(client, till, new) == {"points": 100, "cashback": 0}
    assert await available(client, till, old) == {"points": 0, "cashback": 0}
    assert await sweep(engine, app.state.program) in (0, 1)
    holds = await _holds_by_card(engine)
    assert holds[held][1] == "expired"
    shown = await balance(client, till, new)
    assert (shown["points"], shown["held"]) == (100, {"points": 0, "cashback": 0})
    assert await _held_column(engine, old) == {"points": 0, "cashback": 0}
    assert await _held_column(engine, new) == {"points": 0, "cashback": 0}
    await ledger_ok(client, operator, engine)


# Close ---------------------------------------------------------------------------------------


async def test_a_card_with_open_holds_cannot_be_closed_even_with_nothing_available(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 30))["card_number"]
    held = await _held(client, till, card, 30)
    assert await available(client, till, card) == {"points": 0, "cashback": 0}

    before = await snapshot(engine)
    problem = assert_problem(await _close(client, operator, card), 409, "card_has_balance")
    assert "30 points" in problem["detail"] and "on hold" in problem["detail"]
    assert await snapshot(engine) == before

    captured = await _capture(client, till, held)
    assert captured.status_code == 200, captured.text
    closed = await _close(client, operator, card)
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed"
    await ledger_ok(client, operator, engine)


async def test_a_card_with_a_held_cashback_cannot_be_closed(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    await buy(client, till, card, 2_000)  # 20 points, 100 cashback
    assert (await redeem(client, till, card, 20, "all-points")).status_code == 201
    held = await _held(client, till, card, 100, "cashback")

    assert_problem(await _close(client, operator, card), 409, "card_has_balance")
    # Voided, the cashback is back on the card: still not empty.
    assert (await _void(client, till, held)).status_code == 200
    assert_problem(await _close(client, operator, card), 409, "card_has_balance")
    assert (await redeem(client, till, card, 100, "all-cb", asset="cashback")).status_code == 201
    assert (await _close(client, operator, card)).status_code == 200
    await ledger_ok(client, operator, engine)


async def test_a_card_in_debt_cannot_be_closed(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = await buy(client, till, card, 10_000)
    assert (await redeem(client, till, card, 100, "spent")).status_code == 201
    assert (await redeem(client, till, card, 500, "spent-cb", asset="cashback")).status_code == 201
    await returned_ok(client, till, accrual, 10_000)
    assert await available(client, till, card) == {"points": -100, "cashback": -500}

    before = await snapshot(engine)
    problem = assert_problem(await _close(client, operator, card), 409, "card_has_balance")
    assert "-100 points" in problem["detail"]
    assert await snapshot(engine) == before


# Debt carried over ---------------------------------------------------------------------------


async def test_a_replaced_card_in_debt_hands_the_debt_to_the_new_card(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    old = (await issue_card(client, operator))["card_number"]
    first = await buy(client, till, old, 10_000)  # 100 points, 500 cashback
    second = await buy(client, till, old, 5_000)  # 50 points, 250 cashback
    assert (await redeem(client, till, old, 150, "spent")).status_code == 201
    await returned_ok(client, till, first, 10_000)
    assert await available(client, till, old) == {"points": -100, "cashback": 250}

    r = await _replace(client, operator, old)

    assert r.status_code == 201, r.text
    new = r.json()["new_card"]["card_number"]
    assert r.json()["moved"] == {"points": -100, "cashback": 250}
    assert (r.json()["new_card"]["points"], r.json()["old_card"]["points"]) == (-100, 0)
    shown = await balance(client, till, new)
    assert (shown["points"], shown["cashback"], shown["debt"]) == (
        -100,
        250,
        {"points": 100, "cashback": 0},
    )
    assert await available(client, till, old) == {"points": 0, "cashback": 0}
    tx = await client.get(f"/v1/transactions/{r.json()['transaction_id']}", headers=operator)
    assert sorted((e["card_number"], e["asset"], e["amount"]) for e in tx.json()["entries"]) == (
        sorted(
            [
                (old, "points", 100),
                (new, "points", -100),
                (old, "cashback", -250),
                (new, "cashback", 250),
            ]
        )
    )
    await ledger_ok(client, operator, engine)

    # The debt blocks spending on the new card as it did on the old one.
    other = (await issue_card(client, operator))["card_number"]
    for refused in (
        await redeem(client, till, new, 1, "in-debt"),
        await hold(client, till, new, 1),
        await transfer(client, operator, new, other, 1),
    ):
        problem = assert_problem(refused, 422, "insufficient_balance")
        assert problem["available"] == -100
    # A return of the old card's other purchase lands on the new card, deepening the debt.
    body = await returned_ok(client, till, second, 2_500)
    assert (body["card_number"], body["balance"]) == (new, {"points": -125, "cashback": 125})
    # Earnings on the new card pay it off.
    await buy(client, till, new, 20_000)
    assert await available(client, till, new) == {"points": 75, "cashback": 1_125}
    assert (await redeem(client, till, new, 75, "paid-off")).status_code == 201
    await ledger_ok(client, operator, engine)


async def test_a_merge_carries_a_debt_and_open_holds_over(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    customer = f"cust-{uuid.uuid4()}"
    source = (await issue_card(client, operator, kind="personalized", customer_reference=customer))[
        "card_number"
    ]
    target = (await issue_card(client, operator, kind="personalized", customer_reference=customer))[
        "card_number"
    ]
    accrual = await buy(client, till, source, 10_000)  # 100 points, 500 cashback
    held = await _held(client, till, source, 40)
    assert (await redeem(client, till, source, 60, "spent")).status_code == 201
    await returned_ok(client, till, accrual, 10_000)  # the card has 0 available: -100
    shown = await balance(client, till, source)
    assert (shown["points"], shown["held"]["points"], shown["debt"]["points"]) == (-100, 40, 100)
    await buy(client, till, target, 5_000)  # 50 points, 250 cashback

    r = await _merge(client, operator, source, target)

    assert r.status_code == 200, r.text
    assert r.json()["moved"] == {"points": -100, "cashback": 0}
    shown = await balance(client, till, target)
    assert (shown["points"], shown["cashback"]) == (-50, 250)
    assert (shown["held"], shown["debt"]) == (
        {"points": 40, "cashback": 0},
        {"points": 50, "cashback": 0},
    )
    assert await _holds_by_card(engine) == {held: (target, "open")}
    assert_problem(await redeem(client, till, target, 1, "in-debt"), 422, "insufficient_balance")
    await ledger_ok(client, operator, engine)

    voided = await _void(client, till, held)
    assert voided.status_code == 200, voided.text
    assert voided.json()["balance"] == {"points": -10, "cashback": 250}
    assert_problem(await _close(client, operator, target), 409, "card_has_balance")
    await ledger_ok(client, operator, engine)


# Transfers -----------------------------------------------------------------------------------


async def test_a_transfer_may_move_what_a_lapsed_hold_gave_back(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    other = (await issue_card(client, operator))["card_number"]
    held = await _held(client, till, card, 100)
    await _lapse(engine, held)
    assert await available(client, till, card) == {"points": 100, "cashback": 0}

    r: Response = await transfer(client, operator, card, other, 50)

    assert r.status_code == 201, r.text
    assert r.json()["from_balance"] == {"points": 50, "cashback": 0}

"""Pending points (app/pending/): what a purchase at a partner with a return window earned in
points waits in the operator_pending account until `spendable_at` (the purchase's time plus the
window); the card account's `pending` column counts it. Matured points count as spendable at
read time, are released lazily by any posting that locks the card, and by the release run.

A purchase's window is made to pass by moving its `spendable_at` with SQL. Every test starts
from an empty ledger (tests/conftest.py), so amounts are exact: the default partner earns 1 point
per 100 and 5 % cashback, so a purchase of 10_000 earns 100 points and 500 cashback.

`audit_ok` is GET /v1/audit (which reconciles pending points with the accounts) plus SQL over
pending_points. tests/ledger/test_returns.py's `ledger_ok` is used too."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from app.auth.keys import hash_key
from app.cli import cli
from app.core.config import Settings, get_settings
from app.ledger import hot_repository
from app.pending import repository as pending_repository
from app.pending.service import release_run
from tests.conftest import idem
from tests.factories.cards import funded_card, issue_card
from tests.factories.partners import partner_with_key
from tests.factories.postings import purchase, redeem
from tests.ledger.test_returns import (
    PROBLEM_JSON,
    assert_problem,
    balance,
    buy,
    give_back,
    hold,
    ledger_ok,
    returned_ok,
    reverse,
    snapshot,
    transfer,
)

WINDOW = 14
PASSED = timedelta(seconds=-1)
EMPTY = {"points": 0, "cashback": 0}

# Helpers -------------------------------------------------------------------------------------


async def window_till(
    app: FastAPI,
    client: AsyncClient,
    operator: dict[str, str],
    days: int = WINDOW,
    **overrides: Any,
) -> tuple[dict[str, Any], dict[str, str]]:
    partner, till = await partner_with_key(
        app, client, operator, return_window_days=days, **overrides
    )
    assert partner["return_window_days"] == days
    return partner, till


async def bought(
    client: AsyncClient,
    till: dict[str, str],
    card: str,
    amount: int,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """A purchase at the till's partner; the whole accrual answer."""
    body: dict[str, Any] = {
        "kind": "purchase",
        "card_number": card,
        "amount": amount,
        "currency": "EUR",
        "reference": f"rcpt-{uuid.uuid4()}",
    }
    if occurred_at is not None:
        body["occurred_at"] = occurred_at.isoformat()
    r = await client.post("/v1/accruals", json=body, headers={**till, **idem()})
    assert r.status_code == 201, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def move_spendable_at(engine: AsyncEngine, accrual: str, interval: timedelta) -> None:
    """spendable_at = now() + interval (-1 second: the window passed a second ago)."""
    async with engine.begin() as conn:
        result = await conn.execute(
            text("UPDATE pending_points SET spendable_at = now() + :i WHERE id = :id"),
            {"i": interval, "id": accrual},
        )
        assert result.rowcount == 1


async def pending_row(engine: AsyncEngine, accrual: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT p.amount, p.remaining, p.released_by, c.card_number"
                    " FROM pending_points p JOIN cards c ON c.id = p.card_id WHERE p.id = :id"
                ),
                {"id": accrual},
            )
        ).one()
    return dict(row._mapping)


async def maturities(engine: AsyncEngine, accrual: str) -> list[dict[str, Any]]:
    """The maturity transactions of a purchase, with the points they moved to the card."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT t.id, c.card_number, sum(e.amount) FILTER (WHERE a.kind = 'card') AS card,"
                "       sum(e.amount) FILTER (WHERE a.kind = 'operator_pending') AS waiting"
                " FROM transactions t JOIN cards c ON c.id = t.card_id"
                " JOIN entries e ON e.transaction_id = t.id JOIN accounts a ON a.id = e.account_id"
                " WHERE t.type = 'maturity' AND t.corrects_id = :id"
                " GROUP BY t.id, c.card_number ORDER BY t.id"
            ),
            {"id": accrual},
        )
        return [dict(r._mapping) for r in rows]


async def pending_column(engine: AsyncEngine, card: str) -> int:
    """The card points account's `pending` column."""
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    text(
                        "SELECT a.pending FROM accounts a JOIN cards c ON c.id = a.card_id"
                        " WHERE c.card_number = :n AND a.asset = 'points'"
                    ),
                    {"n": card},
                )
            ).scalar_one()
        )


async def pending_account_total(engine: AsyncEngine) -> int:
    """What the operator_pending account's entries sum to."""
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    text(
                        "SELECT coalesce(sum(e.amount), 0) FROM entries e"
                        " JOIN accounts a ON a.id = e.account_id"
                        " WHERE a.kind = 'operator_pending' AND a.asset = 'points'"
                    )
                )
            ).scalar_one()
        )


_PENDING_CHECKS = {
    "card pending columns that are not the sum of their waiting points": """
        SELECT a.id, a.pending, coalesce(sum(p.remaining), 0) FROM accounts a
        LEFT JOIN pending_points p ON p.account_id = a.id AND p.released_by IS NULL
        WHERE a.kind = 'card'
        GROUP BY a.id HAVING a.pending <> coalesce(sum(p.remaining), 0)
    """,
    "an operator_pending account that is not the sum of the waiting points": """
        SELECT a.id, a.asset FROM accounts a WHERE a.kind = 'operator_pending'
        AND (SELECT coalesce(sum(e.amount), 0) FROM entries e WHERE e.account_id = a.id)
         <> CASE WHEN a.asset = 'points' THEN (
                SELECT coalesce(sum(p.remaining), 0) FROM pending_points p
                WHERE p.released_by IS NULL AND p.program_id = a.program_id) ELSE 0 END
    """,
    "waiting points on another card than their account's": """
        SELECT p.id FROM pending_points p JOIN accounts a ON a.id = p.account_id
        WHERE a.card_id <> p.card_id OR a.asset <> 'points'
    """,
    "purchases released more than once, or by another transaction than their maturity": """
        SELECT t.corrects_id FROM transactions t WHERE t.type = 'maturity'
        GROUP BY t.corrects_id HAVING count(*) > 1
        UNION ALL
        SELECT p.id FROM pending_points p LEFT JOIN transactions t ON t.id = p.released_by
        WHERE p.released_by IS NOT NULL
          AND (t.type IS DISTINCT FROM 'maturity' OR t.corrects_id <> p.id)
    """,
}


async def audit_ok(client: AsyncClient, operator: dict[str, str], engine: AsyncEngine) -> None:
    """GET /v1/audit is ok, and the pending points agree with the accounts (SQL)."""
    r = await client.get("/v1/audit", headers=operator)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["ok"] is True, report
    assert all(total == 0 for total in report["asset_totals"].values()), report
    async with engine.connect() as conn:
        for name, sql in _PENDING_CHECKS.items():
            rows = [tuple(row) for row in await conn.execute(text(sql))]
            assert rows == [], f"{name}: {rows}"


def shown(body: dict[str, Any]) -> tuple[int, int, dict[str, int], dict[str, int]]:
    """A balance answer's available points and cashback, pending and total."""
    return body["points"], body["cashback"], body["pending"], body["total"]


# 1. A purchase's points wait --------------------------------------------------------------------


async def test_a_purchase_in_the_window_earns_pending_points(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await window_till(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    occurred_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)

    answer = await bought(client, till, card, 10_000, occurred_at)

    assert answer["earned"] == {"points": 100, "cashback": 500}
    assert answer["pending"] == 100
    assert datetime.fromisoformat(answer["occurred_at"]) == occurred_at
    assert datetime.fromisoformat(answer["spendable_at"]) == occurred_at + timedelta(days=WINDOW)
    assert answer["balance"] == {"points": 0, "cashback": 500}

    body = await balance(client, till, card)
    assert shown(body) == (0, 500, {"points": 100, "cashback": 0}, {"points": 100, "cashback": 500})
    assert (body["held"], body["debt"]) == (EMPTY, EMPTY)
    assert await pending_column(engine, card) == 100
    row = await pending_row(engine, answer["transaction_id"])
    assert (row["amount"], row["remaining"], row["released_by"]) == (100, 100, None)

    # The accrual's points went to the pending account, not the card.
    tx = (await client.get(f"/v1/transactions/{answer['transaction_id']}", headers=till)).json()
    assert sorted((e["account_kind"], e["asset"], e["amount"]) for e in tx["entries"]) == sorted(
        [
            ("operator_pending", "points", 100),
            ("partner_issued", "points", -100),
            ("card", "cashback", 500),
            ("partner_issued", "cashback", -500),
        ]
    )

    # Pending points cannot be spent; the cashback can, at once.
    before = await snapshot(engine)
    problem = assert_problem(
        await redeem(client, till, card, 100, "too-early"), 422, "insufficient_balance"
    )
    assert (problem["asset"], problem["available"], problem["requested"]) == ("points", 0, 100)
    assert_problem(await redeem(client, till, card, 1, "too-early-1"), 422, "insufficient_balance")
    assert await snapshot(engine) == before
    spent = await redeem(client, till, card, 500, "cashback-now", asset="cashback")
    assert spent.status_code == 201, spent.text
    assert spent.json()["balance"] == {"points": 0, "cashback": 0}
    body = await balance(client, till, card)
    assert shown(body) == (0, 0, {"points": 100, "cashback": 0}, {"points": 100, "cashback": 0})
    assert await maturities(engine, answer["transaction_id"]) == []
    await ledger_ok(client, operator, engine)
    await audit_ok(client, operator, engine)


async def test_a_retried_purchase_replays_its_pending_answer_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await window_till(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    body = {
        "kind": "purchase",
        "card_number": card,
        "amount": 10_000,
        "currency": "EUR",
        "reference": "rcpt-retried",
    }
    key = idem()
    first = await client.post("/v1/accruals", json=body, headers={**till, **key})
    assert first.status_code == 201, first.text
    again = await client.post("/v1/accruals", json=body, headers={**till, **key})
    assert (again.status_code, again.content) == (201, first.content)
    assert again.headers["idempotent-replayed"] == "true"
    assert first.json()["pending"] == 100
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT count(*), sum(amount) FROM pending_points"))).one()
    assert tuple(rows) == (1, 100)
    assert await pending_column(engine, card) == 100
    assert (await balance(client, till, card))["pending"] == {"points": 100, "cashback": 0}
    await audit_ok(client, operator, engine)


async def test_a_partner_without_a_window_credits_the_card_at_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    assert partner["return_window_days"] == 0
    card = (await issue_card(client, operator))["card_number"]
    answer = await bought(client, till, card, 10_000)
    assert (answer["pending"], answer["spendable_at"]) == (0, None)
    assert answer["balance"] == {"points": 100, "cashback": 500}
    body = await balance(client, till, card)
    assert shown(body) == (100, 500, EMPTY, {"points": 100, "cashback": 500})
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM pending_points"))).scalar() == 0
    await ledger_ok(client, operator, engine)


async def test_an_earn_rule_sets_the_window_of_later_purchases(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    assert (await bought(client, till, card, 10_000))["pending"] == 0

    rule = {"earn_rate": {"points": 1, "per_amount": 100}, "cashback_bps": 0}
    r = await client.put(
        f"/v1/partners/{partner['id']}/earn-rule",
        json={**rule, "return_window_days": 7},
        headers=operator,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["earn_rule_version"], r.json()["return_window_days"]) == (2, 7)
    history = await client.get(f"/v1/partners/{partner['id']}/earn-rules", headers=operator)
    assert [(v["version"], v["return_window_days"]) for v in history.json()] == [(2, 7), (1, 0)]
    got = (await client.get(f"/v1/partners/{partner['id']}", headers=operator)).json()
    assert got["return_window_days"] == 7

    answer = await bought(client, till, card, 5_000)
    assert (answer["earned"], answer["pending"]) == ({"points": 50, "cashback": 0}, 50)
    occurred_at = datetime.fromisoformat(answer["occurred_at"])
    assert datetime.fromisoformat(answer["spendable_at"]) == occurred_at + timedelta(days=7)
    body = await balance(client, till, card)
    assert shown(body) == (
        100,
        500,
        {"points": 50, "cashback": 0},
        {"points": 150, "cashback": 500},
    )
    await ledger_ok(client, operator, engine)
    await audit_ok(client, operator, engine)


# 2. The boundary -------------------------------------------------------------------------------


async def test_points_count_as_spendable_from_spendable_at_before_any_release(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await window_till(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = (await bought(client, till, card, 10_000))["transaction_id"]

    # An hour before: still pending.
    await move_spendable_at(engine, accrual, timedelta(hours=1))
    body = await balance(client, till, card)
    assert shown(body) == (0, 500, {"points": 100, "cashback": 0}, {"points": 100, "cashback": 500})
    assert_problem(
        await redeem(client, till, card, 1, "an-hour-early"), 422, "insufficient_balance"
    )

    # Exactly at spendable_at: inside one database transaction now() stands still, so the
    # balance read's and the release's statements see spendable_at = now(). Both count it.
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        async with raw.transaction():
            program = app.state.program
            key = hash_key(till["Authorization"].removeprefix("Bearer "))
            card_id = await raw.fetchval("SELECT id FROM cards WHERE card_number = $1", card)
            # A microsecond before: pending still.
            await raw.execute(
                "UPDATE pending_points SET spendable_at = now() + interval '1 microsecond'"
                " WHERE id = $1",
                uuid.UUID(accrual),
            )
            row = await hot_repository.balance_for_key(raw, key, program.id, card, program.timezone)
            assert (row["points"], row["points_pending"], row["matured"]) == (0, 100, 0)
            assert await pending_repository.matured_on_cards(raw, [card_id]) == []
            # At it: spendable.
            await raw.execute(
                "UPDATE pending_points SET spendable_at = now() WHERE id = $1", uuid.UUID(accrual)
            )
            row = await hot_repository.balance_for_key(raw, key, program.id, card, program.timezone)
            assert (row["points"], row["points_pending"], row["matured"]) == (0, 100, 100)
            matured = await pending_repository.matured_on_cards(raw, [card_id])
            assert [(str(r["id"]), r["remaining"]) for r in matured] == [(accrual, 100)]
    body = await balance(client, till, card)
    assert shown(body) == (100, 500, EMPTY, {"points": 100, "cashback": 500})

    await move_spendable_at(engine, accrual, PASSED)
    body = await balance(client, till, card)
    assert shown(body) == (100, 500, EMPTY, {"points": 100, "cashback": 500})
    assert await maturities(engine, accrual) == []
    assert await pending_column(engine, card) == 100
    assert (await pending_row(engine, accrual))["released_by"] is None

    # Spending them releases them first, once.
    spent = await redeem(client, till, card, 100, "now-spendable")
    assert spent.status_code == 201, spent.text
    assert spent.json()["balance"] == {"points": 0, "cashback": 500}
    [maturity] = await maturities(engine, accrual)
    assert (maturity["card_number"], maturity["card"], maturity["waiting"]) == (card, 100, -100)
    row = await pending_row(engine, accrual)
    assert (row["remaining"], str(row["released_by"])) == (100, str(maturity["id"]))
    assert await pending_column(engine, card) == 0

    tx = (await client.get(f"/v1/transactions/{maturity['id']}", headers=operator)).json()
    assert (tx["type"], tx["corrects_id"]) == ("maturity", accrual)
    assert sorted((e["account_kind"], e["asset"], e["amount"]) for e in tx["entries"]) == [
        ("card", "points", 100),
        ("operator_pending", "points", -100),
    ]
    history = (await client.get(f"/v1/cards/{card}/transactions", headers=till)).json()["items"]
    assert [(i["type"], i["points"], i["cashback"]) for i in history] == [
        ("redemption", -100, 0),
        ("maturity", 100, 0),
        ("accrual", 0, 500),
    ]

    # Nothing more to release: the run and later postings leave it at one maturity.
    assert await release_run(app.state.engine, app.state.program) == 0
    assert (await purchase(client, till, card, 100, "later")).status_code == 201
    assert len(await maturities(engine, accrual)) == 1
    body = await balance(client, till, card)
    assert shown(body) == (0, 505, {"points": 1, "cashback": 0}, {"points": 1, "cashback": 505})
    await ledger_ok(client, operator, engine)
    await audit_ok(client, operator, engine)


async def test_a_purchase_on_a_card_with_matured_points_releases_them_in_its_answer(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Any posting on the card releases its matured points first, and its answer's balance
    includes them."""
    _, till = await window_till(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    first = (await bought(client, till, card, 10_000))["transaction_id"]
    await move_spendable_at(engine, first, PASSED)

    answer = await bought(client, till, card, 2_000)
    assert (answer["pending"], answer["balance"]) == (20, {"points": 100, "cashback": 600})
    assert [m["card"] for m in await maturities(engine, first)] == [100]
    assert await pending_column(engine, card) == 20
    body = await balance(client, till, card)
    assert shown(body) == (
        100,
        600,
        {"points": 20, "cashback": 0},
        {"points": 120, "cashback": 600},
    )
    await ledger_ok(client, operator, engine)
    await audit_ok(client, operator, engine)


async def test_holds_transfers_and_refusals_count_matured_points(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await window_till(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    other = (await issue_card(client, operator))["card_number"]
    accrual = (await bought(client, till, card, 10_000))["transaction_id"]

    before = await snapshot(engine)
    for refused in (
        await hold(client, till, card, 1),
        await transfer(client, operator, card, other, 1),
    ):
        problem = assert_problem(refused, 422, "insufficient_balance")
        assert (problem["available"], problem["requested"]) == (0, 1)
    assert await snapshot(engine) == before

    await move_spendable_at(engine, accrual, PASSED)
    problem = assert_problem(
        await redeem(client, till, card, 101, "one-too-many"), 422, "insufficient_balance"
    )
    assert (problem["available"], problem["requested"]) == (100, 101)
    held = await hold(client, till, card, 60)
    assert held.status_code == 201, held.text
    moved = await transfer(client, operator, card, other, 40)
    assert moved.status_code == 201, moved.text
    assert moved.json()["from_balance"] == {"points": 0, "cashback": 500}
    assert [m["card"] for m in await maturities(engine, accrual)] == [100]
    read = await balance(client, till, card)
    assert shown(read) == (0, 500, EMPTY, {"points": 60, "cashback": 500})
    assert read["held"] == {"points": 60, "cashback": 0}
    assert shown(await balance(client, till, other))[:3] == (40, 0, EMPTY)
    await audit_ok(client, operator, engine)


# 3. The release run -----------------------------------------------------------------------------


async def test_the_release_run_releases_each_matured_purchase_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await window_till(app, client, operator)
    cards = [(await issue_card(client, operator))["card_number"] for _ in range(3)]
    a1 = (await bought(client, till, cards[0], 10_000))["transaction_id"]  # 100
    a2 = (await bought(client, till, cards[0], 2_500))["transaction_id"]  # 25
    b1 = (await bought(client, till, cards[1], 4_000))["transaction_id"]  # 40
    b2 = (await bought(client, till, cards[1], 700))["transaction_id"]  # 7, still pending
    c1 = (await bought(client, till, cards[2], 900))["transaction_id"]  # 9, still pending
    for accrual in (a1, a2, b1):
        await move_spendable_at(engine, accrual, PASSED)
    assert await pending_account_total(engine) == 181

    # Two runs at once: each card's points are released once.
    runs = await asyncio.gather(
        release_run(app.state.engine, app.state.program),
        release_run(app.state.engine, app.state.program),
    )
    assert sum(runs) == 2, runs
    assert await release_run(app.state.engine, app.state.program) == 0

    for accrual, card, points in ((a1, cards[0], 100), (a2, cards[0], 25), (b1, cards[1], 40)):
        [maturity] = await maturities(engine, accrual)
        assert (maturity["card_number"], maturity["card"], maturity["waiting"]) == (
            card,
            points,
            -points,
        )
    for accrual in (b2, c1):
        assert await maturities(engine, accrual) == []
    assert [await pending_column(engine, card) for card in cards] == [0, 7, 9]
    assert await pending_account_total(engine) == 7 + 9

    shown_cards = [shown(await balance(client, till, card)) for card in cards]
    assert shown_cards == [
        (125, 625, EMPTY, {"points": 125, "cashback": 625}),
        (40, 235, {"points": 7, "cashback": 0}, {"points": 47, "cashback": 235}),
        (0, 45, {"points": 9, "cashback": 0}, {"points": 9, "cashback": 45}),
    ]
    spent = await redeem(client, till, cards[0], 125, "all-released")
    assert spent.status_code == 201, spent.text
    await ledger_ok(client, operator, engine)
    await audit_ok(client, operator, engine)


async def test_many_concurrent_release_runs_with_small_pages_release_each_card_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await window_till(app, client, operator)
    cards = [(await issue_card(client, operator))["card_number"] for _ in range(7)]
    accruals = []
    for i, card in enumerate(cards):
        for _ in range(1 + i % 3):
            accruals.append((await bought(client, till, card, 1_000))["transaction_id"])
    for accrual in accruals:
        await move_spendable_at(engine, accrual, PASSED)

    runs = await asyncio.gather(
        *(release_run(app.state.engine, app.state.program, page=page) for page in (1, 2, 3, 200))
    )
    assert sum(runs) == len(cards), runs
    for accrual in accruals:
        assert [m["card"] for m in await maturities(engine, accrual)] == [10]
    assert [await pending_column(engine, card) for card in cards] == [0] * 7
    assert [shown(await balance(client, till, card))[0] for card in cards] == [
        10 * (1 + i % 3) for i in range(7)
    ]
    assert await pending_account_total(engine) == 0
    await ledger_ok(client, operator, engine)
    await audit_ok(client, operator, engine)


async def test_the_release_run_and_postings_racing_release_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await window_till(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accruals = [(await bought(client, till, card, 1_000))["transaction_id"] for _ in range(5)]
    for accrual in accruals:
        await move_spendable_at(engine, accrual, PASSED)

    results = await asyncio.gather(
        release_run(app.state.engine, app.state.program),
        redeem(client, till, card, 20, "race-1"),
        release_run(app.state.engine, app.state.program),
        redeem(client, till, card, 30, "race-2"),
    )
    assert results[0] + results[2] in (0, 1), results
    assert results[1].status_code == 201, results[1].text
    assert results[3].status_code == 201, results[3].text
    for accrual in accruals:
        assert [m["card"] for m in await maturities(engine, accrual)] == [10]
    assert await pending_column(engine, card) == 0
    assert await pending_account_total(engine) == 0
    assert shown(await balance(client, till, card)) == (
        0,
        250,
        EMPTY,
        {"points": 0, "cashback": 250},
    )
    await ledger_ok(client, operator, engine)
    await audit_ok(client, operator, engine)


# 4./5. Returns ----------------------------------------------------------------------------------


async def test_a_return_in_the_window_takes_back_from_pending_first(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await window_till(app, client, operator)
    card = (await funded_card(client, operator, 30))["card_number"]  # 30 points available
    accrual = (await bought(client, till, card, 10_000))["transaction_id"]
    assert shown(await balance(client, till, card)) == (
        30,
        500,
        {"points": 100, "cashback": 0},
        {"points": 130, "cashback": 500},
    )

    body = await returned_ok(client, till, accrual, 5_000)
    assert body["taken_back"] == {"points": 50, "cashback": 250}
    assert (body["balance"], body["debt"]) == ({"points": 30, "cashback": 250}, EMPTY)
    read = await balance(client, till, card)
    assert shown(read) == (30, 250, {"points": 50, "cashback": 0}, {"points": 80, "cashback": 250})
    assert read["debt"] == EMPTY
    assert (await pending_row(engine, accrual))["remaining"] == 50
    assert await pending_column(engine, card) == 50
    tx = (await client.get(f"/v1/transactions/{body['transaction_id']}", headers=till)).json()
    assert sorted((e["account_kind"], e["asset"], e["amount"]) for e in tx["entries"]) == sorted(
        [
            ("operator_pending", "points", -50),
            ("partner_issued", "points", 50),
            ("card", "cashback", -250),
            ("partner_issued", "cashback", 250),
        ]
    )

    body = await returned_ok(client, till, accrual, 5_000)
    assert body["taken_back"] == {"points": 50, "cashback": 250}
    assert (body["balance"], body["debt"]) == ({"points": 30, "cashback": 0}, EMPTY)
    read = await balance(client, till, card)
    assert shown(read) == (30, 0, EMPTY, {"points": 30, "cashback": 0})
    row = await pending_row(engine, accrual)
    assert (row["amount"], row["remaining"], row["released_by"]) == (100, 0, None)
    assert await pending_column(engine, card) == 0
    assert await pending_account_total(engine) == 0

    # After the boundary there is nothing left to release.
    await move_spendable_at(engine, accrual, PASSED)
    assert shown(await balance(client, till, card)) == (30, 0, EMPTY, {"points": 30, "cashback": 0})
    assert await release_run(app.state.engine, app.state.program) == 0
    assert (await redeem(client, till, card, 30, "the-award")).status_code == 201
    assert await maturities(engine, accrual) == []
    assert shown(await balance(client, till, card)) == (0, 0, EMPTY, EMPTY)
    await audit_ok(client, operator, engine)


async def test_a_return_of_a_split_pending_purchase_rounds_like_any_return(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Thirds of 100 pending points: 33, 33, 34, all from pending."""
    _, till = await window_till(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = (await bought(client, till, card, 10_000))["transaction_id"]
    taken = [
        (await returned_ok(client, till, accrual, part))["taken_back"]["points"]
        for part in (3_333, 3_333, 3_334)
    ]
    assert taken == [33, 33, 34]
    assert (await pending_row(engine, accrual))["remaining"] == 0
    assert shown(await balance(client, till, card)) == (0, 0, EMPTY, EMPTY)
    await audit_ok(client, operator, engine)


async def test_a_return_after_release_claws_back_from_the_card(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await window_till(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = (await bought(client, till, card, 10_000))["transaction_id"]
    await move_spendable_at(engine, accrual, PASSED)
    assert await release_run(app.state.engine, app.state.program) == 1
    assert (await redeem(client, till, card, 80, "spent")).status_code == 201

    body = await returned_ok(client, till, accrual, 10_000)
    assert body["taken_back"] == {"points": 100, "cashback": 500}
    assert (body["balance"], body["debt"]) == (
        {"points": -80, "cashback": 0},
        {"points": 80, "cashback": 0},
    )
    read = await balance(client, till, card)
    assert shown(read) == (-80, 0, EMPTY, {"points": -80, "cashback": 0})
    assert read["debt"] == {"points": 80, "cashback": 0}
    tx = (await client.get(f"/v1/transactions/{body['transaction_id']}", headers=till)).json()
    assert sorted((e["account_kind"], e["asset"], e["amount"]) for e in tx["entries"]) == sorted(
        [
            ("card", "points", -100),
            ("partner_issued", "points", 100),
            ("card", "cashback", -500),
            ("partner_issued", "cashback", 500),
        ]
    )
    row = await pending_row(engine, accrual)
    assert (row["remaining"], row["released_by"] is not None) == (100, True)
    assert await pending_account_total(engine) == 0
    assert_problem(await redeem(client, till, card, 1, "in-debt"), 422, "insufficient_balance")
    await audit_ok(client, operator, engine)


async def test_a_return_after_the_boundary_before_any_release_claws_back_from_the_card(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Matured but not yet released: the points were the card's to spend already (the balance
    read said so), so the return releases them first and takes them back from the card."""
    _, till = await window_till(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = (await bought(client, till, card, 10_000))["transaction_id"]
    await move_spendable_at(engine, accrual, PASSED)
    assert shown(await balance(client, till, card))[:2] == (100, 500)

    body = await returned_ok(client, till, accrual, 5_000)
    assert body["taken_back"] == {"points": 50, "cashback": 250}
    assert (body["balance"], body["debt"]) == ({"points": 50, "cashback": 250}, EMPTY)
    assert [m["card"] for m in await maturities(engine, accrual)] == [100]
    assert shown(await balance(client, till, card)) == (
        50,
        250,
        EMPTY,
        {"points": 50, "cashback": 250},
    )
    await audit_ok(client, operator, engine)


async def test_a_partial_return_in_the_window_leaves_the_rest_to_mature(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """30 % comes back in the window (30 points from pending); the other 70 mature; the rest
    of the goods then come back from the card."""
    _, till = await window_till(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = (await bought(client, till, card, 10_000))["transaction_id"]
    body = await returned_ok(client, till, accrual, 3_000)
    assert (body["taken_back"], body["balance"]) == (
        {"points": 30, "cashback": 150},
        {"points": 0, "cashback": 350},
    )

    await move_spendable_at(engine, accrual, PASSED)
    assert shown(await balance(client, till, card)) == (
        70,
        350,
        EMPTY,
        {"points": 70, "cashback": 350},
    )
    assert await release_run(app.state.engine, app.state.program) == 1
    [maturity] = await maturities(engine, accrual)
    assert (maturity["card"], maturity["waiting"]) == (70, -70)
    row = await pending_row(engine, accrual)
    assert (row["amount"], row["remaining"]) == (100, 70)

    body = await returned_ok(client, till, accrual, 7_000)
    assert body["taken_back"] == {"points": 70, "cashback": 350}
    assert (body["balance"], body["debt"]) == (EMPTY, EMPTY)
    assert shown(await balance(client, till, card)) == (0, 0, EMPTY, EMPTY)
    assert await pending_account_total(engine) == 0
    await audit_ok(client, operator, engine)


# 6. Reversals ----------------------------------------------------------------------------------


async def test_a_reversal_in_the_window_takes_back_from_pending(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await window_till(app, client, operator)
    card = (await funded_card(client, operator, 30))["card_number"]
    accrual = (await bought(client, till, card, 10_000))["transaction_id"]

    r = await reverse(client, till, accrual)
    assert r.status_code == 201, r.text
    assert r.json()["balance"] == {"points": 30, "cashback": 0}
    tx = (await client.get(f"/v1/transactions/{r.json()['transaction_id']}", headers=till)).json()
    assert sorted((e["account_kind"], e["asset"], e["amount"]) for e in tx["entries"]) == sorted(
        [
            ("operator_pending", "points", -100),
            ("partner_issued", "points", 100),
            ("card", "cashback", -500),
            ("partner_issued", "cashback", 500),
        ]
    )
    read = await balance(client, till, card)
    assert shown(read) == (30, 0, EMPTY, {"points": 30, "cashback": 0})
    assert read["debt"] == EMPTY
    row = await pending_row(engine, accrual)
    assert (row["remaining"], row["released_by"]) == (0, None)
    assert await pending_column(engine, card) == 0
    assert await pending_account_total(engine) == 0

    await move_spendable_at(engine, accrual, PASSED)
    assert await release_run(app.state.engine, app.state.program) == 0
    assert await maturities(engine, accrual) == []
    assert shown(await balance(client, till, card))[:3] == (30, 0, EMPTY)
    await ledger_ok(client, operator, engine)
    await audit_ok(client, operator, engine)


async def test_a_reversal_after_release_takes_back_from_the_card(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await window_till(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = (await bought(client, till, card, 10_000))["transaction_id"]
    await move_spendable_at(engine, accrual, PASSED)
    assert await release_run(app.state.engine, app.state.program) == 1
    assert (await redeem(client, till, card, 60, "spent")).status_code == 201

    r = await reverse(client, till, accrual)
    assert r.status_code == 201, r.text
    assert r.json()["balance"] == {"points": -60, "cashback": 0}
    tx = (await client.get(f"/v1/transactions/{r.json()['transaction_id']}", headers=till)).json()
    assert sorted((e["account_kind"], e["asset"], e["amount"]) for e in tx["entries"]) == sorted(
        [
            ("card", "points", -100),
            ("partner_issued", "points", 100),
            ("card", "cashback", -500),
            ("partner_issued", "cashback", 500),
        ]
    )
    read = await balance(client, till, card)
    assert shown(read) == (-60, 0, EMPTY, {"points": -60, "cashback": 0})
    assert read["debt"] == {"points": 60, "cashback": 0}
    assert await pending_account_total(engine) == 0
    await ledger_ok(client, operator, engine)
    await audit_ok(client, operator, engine)


# 7. Backdated purchases ------------------------------------------------------------------------


async def test_a_purchase_backdated_past_its_window_is_spendable_at_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await window_till(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    now = datetime.now(UTC).replace(microsecond=0)

    old = await bought(client, till, card, 10_000, now - timedelta(days=WINDOW, minutes=1))
    assert (old["pending"], old["spendable_at"]) == (0, None)
    assert old["balance"] == {"points": 100, "cashback": 500}

    recent = await bought(client, till, card, 2_000, now - timedelta(days=WINDOW - 1))
    assert recent["pending"] == 20
    assert datetime.fromisoformat(recent["spendable_at"]) == now + timedelta(days=1)
    assert recent["balance"] == {"points": 100, "cashback": 600}

    assert shown(await balance(client, till, card)) == (
        100,
        600,
        {"points": 20, "cashback": 0},
        {"points": 120, "cashback": 600},
    )
    async with engine.connect() as conn:
        ids = (await conn.execute(text("SELECT id FROM pending_points"))).scalars().all()
    assert [str(i) for i in ids] == [recent["transaction_id"]]
    assert (await redeem(client, till, card, 100, "spend-old")).status_code == 201
    await ledger_ok(client, operator, engine)
    await audit_ok(client, operator, engine)


# 8./9. The card's life -------------------------------------------------------------------------


async def test_a_replacement_card_takes_the_pending_points(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await window_till(app, client, operator)
    old = (await funded_card(client, operator, 30))["card_number"]
    kept = (await bought(client, till, old, 10_000))["transaction_id"]  # 100 pending
    returned = (await bought(client, till, old, 4_000))["transaction_id"]  # 40 pending

    r = await client.post(f"/v1/cards/{old}/replace", json={}, headers={**operator, **idem()})
    assert r.status_code == 201, r.text
    new = r.json()["new_card"]["card_number"]
    assert r.json()["moved"] == {"points": 30, "cashback": 700}

    assert shown(await balance(client, operator, new)) == (
        30,
        700,
        {"points": 140, "cashback": 0},
        {"points": 170, "cashback": 700},
    )
    assert shown(await balance(client, operator, old)) == (0, 0, EMPTY, EMPTY)
    assert await pending_column(engine, old) == 0
    assert await pending_column(engine, new) == 140
    assert (await pending_row(engine, kept))["card_number"] == new
    await audit_ok(client, operator, engine)

    # A return in the window takes from the new card's pending points.
    body = await returned_ok(client, till, returned, 4_000)
    assert body["card_number"] == new
    assert body["taken_back"] == {"points": 40, "cashback": 200}
    assert shown(await balance(client, operator, new)) == (
        30,
        500,
        {"points": 100, "cashback": 0},
        {"points": 130, "cashback": 500},
    )

    # After the boundary the new card gets them.
    await move_spendable_at(engine, kept, PASSED)
    assert shown(await balance(client, operator, new)) == (
        130,
        500,
        EMPTY,
        {"points": 130, "cashback": 500},
    )
    assert await release_run(app.state.engine, app.state.program) == 1
    [maturity] = await maturities(engine, kept)
    assert (maturity["card_number"], maturity["card"]) == (new, 100)
    assert await pending_column(engine, new) == 0
    assert shown(await balance(client, operator, old)) == (0, 0, EMPTY, EMPTY)
    spent = await redeem(client, till, new, 130, "on-the-new-card")
    assert spent.status_code == 201, spent.text
    await audit_ok(client, operator, engine)


async def test_a_merge_moves_the_pending_points_to_the_card_that_keeps_the_value(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await window_till(app, client, operator)
    person = {"kind": "personalized", "customer_reference": "cust-pending"}
    source = (await issue_card(client, operator, **person))["card_number"]
    target = (await issue_card(client, operator, **person))["card_number"]
    moving = (await bought(client, till, source, 10_000))["transaction_id"]  # 100 pending
    (await bought(client, till, target, 2_000))["transaction_id"]  # 20 pending

    r = await client.post(
        f"/v1/cards/{source}/merge",
        json={"into_card_number": target},
        headers={**operator, **idem()},
    )
    assert r.status_code == 200, r.text
    assert r.json()["moved"] == {"points": 0, "cashback": 500}
    assert shown(await balance(client, operator, target)) == (
        0,
        600,
        {"points": 120, "cashback": 0},
        {"points": 120, "cashback": 600},
    )
    assert shown(await balance(client, operator, source)) == (0, 0, EMPTY, EMPTY)
    assert [await pending_column(engine, c) for c in (source, target)] == [0, 120]

    await move_spendable_at(engine, moving, PASSED)
    assert await release_run(app.state.engine, app.state.program) == 1
    [maturity] = await maturities(engine, moving)
    assert (maturity["card_number"], maturity["card"]) == (target, 100)
    assert shown(await balance(client, operator, target)) == (
        100,
        600,
        {"points": 20, "cashback": 0},
        {"points": 120, "cashback": 600},
    )
    await audit_ok(client, operator, engine)


async def test_a_card_with_pending_points_cannot_be_closed(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """A partner without cashback: the pending points are all the card has."""
    _, till = await window_till(app, client, operator, cashback_bps=0)
    card = (await issue_card(client, operator))["card_number"]
    accrual = (await bought(client, till, card, 10_000))["transaction_id"]
    assert shown(await balance(client, till, card)) == (
        0,
        0,
        {"points": 100, "cashback": 0},
        {"points": 100, "cashback": 0},
    )

    before = await snapshot(engine)
    problem = assert_problem(
        await client.post(f"/v1/cards/{card}/close", headers=operator), 409, "card_has_balance"
    )
    assert "100 points pending" in problem["detail"], problem
    assert await snapshot(engine) == before
    assert (await client.get(f"/v1/cards/{card}", headers=operator)).json()["status"] == "active"

    # Matured (not yet released): still refused, now as points the card holds.
    await move_spendable_at(engine, accrual, PASSED)
    problem = assert_problem(
        await client.post(f"/v1/cards/{card}/close", headers=operator), 409, "card_has_balance"
    )
    assert "holds 100 points" in problem["detail"], problem
    assert (await client.get(f"/v1/cards/{card}", headers=operator)).json()["status"] == "active"

    # Once the points are spent, the card can close.
    assert (await redeem(client, till, card, 100, "spend-all")).status_code == 201
    r = await client.post(f"/v1/cards/{card}/close", headers=operator)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "closed"
    await ledger_ok(client, operator, engine)
    await audit_ok(client, operator, engine)


async def test_a_card_whose_pending_points_all_came_back_can_be_closed(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await window_till(app, client, operator, cashback_bps=0)
    card = (await issue_card(client, operator))["card_number"]
    accrual = (await bought(client, till, card, 10_000))["transaction_id"]
    assert_problem(
        await client.post(f"/v1/cards/{card}/close", headers=operator), 409, "card_has_balance"
    )
    await returned_ok(client, till, accrual, 10_000)
    r = await client.post(f"/v1/cards/{card}/close", headers=operator)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "closed"
    await audit_ok(client, operator, engine)


# 10. The audit after all of it -----------------------------------------------------------------


async def test_the_audit_is_ok_after_pending_points_went_every_way(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await window_till(app, client, operator)
    _, plain = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 50))["card_number"]
    other = (await issue_card(client, operator))["card_number"]
    released = (await bought(client, till, card, 10_000))["transaction_id"]
    returned = (await bought(client, till, card, 3_000))["transaction_id"]
    reversed_ = (await bought(client, till, card, 2_000))["transaction_id"]
    waiting = (await bought(client, till, other, 1_100))["transaction_id"]
    assert (await purchase(client, plain, card, 500, "no-window")).status_code == 201
    await returned_ok(client, till, returned, 1_500)
    assert (await reverse(client, till, reversed_)).status_code == 201
    await move_spendable_at(engine, released, PASSED)
    await move_spendable_at(engine, returned, PASSED)
    assert await release_run(app.state.engine, app.state.program) == 1
    await returned_ok(client, till, returned, 1_500)
    assert (await redeem(client, till, card, 120, "spend")).status_code == 201
    r = await client.post(f"/v1/cards/{other}/replace", json={}, headers={**operator, **idem()})
    assert r.status_code == 201, r.text
    new = r.json()["new_card"]["card_number"]

    # Points: 50 award + 100 released + 30 (15 taken from pending, 15 released then taken
    # from the card) + 5 at the plain partner - 120 spent = 35.
    # Cashback: 500 + 150 - 75 - 75 + 100 reversed - 100 + 25 at the plain partner = 525.
    assert shown(await balance(client, till, card)) == (
        35,
        525,
        EMPTY,
        {"points": 35, "cashback": 525},
    )
    assert shown(await balance(client, till, new)) == (
        0,
        55,
        {"points": 11, "cashback": 0},
        {"points": 11, "cashback": 55},
    )
    assert await pending_account_total(engine) == 11
    assert [len(await maturities(engine, a)) for a in (released, returned, reversed_, waiting)] == [
        1,
        1,
        0,
        0,
    ]
    await audit_ok(client, operator, engine)
    r = await client.get("/v1/audit", headers=operator)
    report = r.json()
    assert (report["unbalanced_transactions"], report["card_balance_mismatches"]) == ([], [])
    assert report["hold_mismatches"] == []


async def test_the_release_pending_command_releases_matured_points(
    app: FastAPI,
    client: AsyncClient,
    operator: dict[str, str],
    engine: AsyncEngine,
    database_url: str,
) -> None:
    _, till = await window_till(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = (await bought(client, till, card, 10_000))["transaction_id"]
    await move_spendable_at(engine, accrual, PASSED)

    def run() -> tuple[int, str]:
        get_settings.cache_clear()
        try:
            result = CliRunner().invoke(
                cli, ["release-pending"], env={"DATABASE_URL": database_url}
            )
        finally:
            get_settings.cache_clear()
        return result.exit_code, result.output

    assert await asyncio.to_thread(run) == (0, "released pending points on 1 cards\n")
    assert await asyncio.to_thread(run) == (0, "released pending points on 0 cards\n")
    assert [m["card"] for m in await maturities(engine, accrual)] == [100]
    assert await pending_column(engine, card) == 0
    await audit_ok(client, operator, engine)


async def test_the_audit_reports_pending_points_that_disagree_with_the_accounts(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await window_till(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    await bought(client, till, card, 10_000)
    await audit_ok(client, operator, engine)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE accounts SET pending = 0 WHERE asset = 'points' AND card_id ="
                " (SELECT id FROM cards WHERE card_number = :n)"
            ),
            {"n": card},
        )
    # The card now shows none of its 100 pending points; the books say otherwise.
    assert (await balance(client, till, card))["pending"] == EMPTY
    report = (await client.get("/v1/audit", headers=operator)).json()
    assert report["ok"] is False, report
    assert report["pending_mismatches"] == [
        {"card_number": card, "stored": 0, "from_purchases": 100}
    ]


# 11. Bad input ---------------------------------------------------------------------------------


async def test_bad_return_windows_are_refused(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    base = {"name": "Window", "earn_rate": {"points": 1, "per_amount": 100}, "cashback_bps": 0}
    partners = text("SELECT count(*) FROM partners")
    async with engine.connect() as conn:
        before = (await conn.execute(partners)).scalar()
    for i, window in enumerate((-1, 366, "14", 1.5, True, None)):
        r = await client.post(
            "/v1/partners",
            json={**base, "code": f"bad-window-{i}", "return_window_days": window},
            headers=operator,
        )
        assert r.status_code == 422, (window, r.text)
        assert r.headers["content-type"] == PROBLEM_JSON
        body = r.json()
        assert (body["status"], body["code"]) == (422, "validation_error"), (window, body)
        assert [e["pointer"] for e in body["errors"]] == ["/return_window_days"], (window, body)
    async with engine.connect() as conn:
        assert (await conn.execute(partners)).scalar() == before

    # The bounds themselves are fine.
    for window in (0, 365):
        r = await client.post(
            "/v1/partners",
            json={**base, "code": f"window-{window}", "return_window_days": window},
            headers=operator,
        )
        assert r.status_code == 201, r.text
        assert r.json()["return_window_days"] == window


async def test_bad_return_windows_on_an_earn_rule_are_refused(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, _ = await partner_with_key(app, client, operator)
    rule = {"earn_rate": {"points": 1, "per_amount": 100}}
    for window in (-1, 366, "14", 1.5):
        r = await client.put(
            f"/v1/partners/{partner['id']}/earn-rule",
            json={**rule, "return_window_days": window},
            headers=operator,
        )
        assert r.status_code == 422, (window, r.text)
        assert r.headers["content-type"] == PROBLEM_JSON
        body = r.json()
        assert body["code"] == "validation_error", body
        assert [e["pointer"] for e in body["errors"]] == ["/return_window_days"], (window, body)
    got = (await client.get(f"/v1/partners/{partner['id']}", headers=operator)).json()
    assert (got["earn_rule_version"], got["return_window_days"]) == (1, 0)


async def test_a_return_past_the_purchase_leaves_the_pending_points_alone(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """A return past what the purchase was is refused for a pending purchase too, and leaves
    the pending points as they were."""
    _, till = await window_till(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = await buy(client, till, card, 10_000)
    before = await snapshot(engine)
    assert_problem(await give_back(client, till, accrual, 10_001), 422, "refund_exceeds_original")
    assert await snapshot(engine) == before
    assert (await pending_row(engine, accrual))["remaining"] == 100


# Pending points and expiry -----------------------------------------------------------------


class TestWithPointsExpiry:
    """Points expire a month after the day they were earned."""

    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"points_expiry_months": 1})

    async def test_points_never_spendable_do_not_expire_as_they_mature(
        self, app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
    ) -> None:
        _, till = await window_till(app, client, operator, days=60)
        card = (await issue_card(client, operator))["card_number"]
        accrual = (await bought(client, till, card, 10_000))["transaction_id"]
        # 45 days later: past the lot's month, inside the 60-day window.
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE point_lots SET expires_on = expires_on - 45, earned_on = earned_on - 45"
                )
            )
            await conn.execute(
                text("UPDATE pending_points SET spendable_at = spendable_at - interval '45 days'")
            )
        assert (await balance(client, till, card))["pending"] == {"points": 100, "cashback": 0}
        await move_spendable_at(engine, accrual, PASSED)
        assert shown(await balance(client, till, card))[:3] == (100, 500, EMPTY)
        assert (await redeem(client, till, card, 100, "finally")).status_code == 201

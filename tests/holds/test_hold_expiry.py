"""A hold's time to live: once it runs out, what the hold reserved is available at once (before
anything is posted), the hold can be neither captured nor voided, and the value goes back to the
card visibly: released by the next posting on the card, or by the sweep, once.

Tests run without the in-process sweep (conftest: hold_sweep_seconds=0); they lapse a hold by
moving its expires_at into the past, or with a one-second time to live."""

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from app.cli import cli
from app.core.config import get_settings
from app.holds.expiry import sweep
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
    history,
    lapse,
    ledger_state,
    open_hold,
    problem,
    void_hold,
)


async def _sweep(app: FastAPI, page: int = 200) -> int:
    return await sweep(app.state.engine, app.state.program, page)


async def _sweep_later(app: FastAPI, delay: float, page: int) -> int:
    await asyncio.sleep(delay)
    return await _sweep(app, page)


async def _releases(engine: AsyncEngine) -> dict[str, int]:
    """hold id -> how many release transactions it has."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT h.id, count(t.id) AS n FROM holds h"
                " LEFT JOIN transactions t ON t.corrects_id = h.id AND t.type = 'release'"
                " GROUP BY h.id"
            )
        )
        return {str(r.id): int(r.n) for r in rows}


async def test_a_lapsed_hold_is_available_again_before_anything_releases_it(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    hold = await open_hold(client, till, card, 30)
    kept = await open_hold(client, till, card, 20)
    await assert_balance(client, till, card, available=amounts(50), held=amounts(50))

    await lapse(engine, hold["id"])
    await assert_balance(client, till, card, available=amounts(80), held=amounts(20))
    # Nothing was posted: the stored figures still count the hold.
    assert await account_row(engine, card) == (50, 50)
    assert [h[0] for h in await history(client, operator, card)] == ["hold", "hold", "award"]

    read = (await client.get(f"/v1/holds/{hold['id']}", headers=till)).json()
    assert (read["status"], read["settled_at"], read["settled_by"]) == ("expired", None, None)
    assert (await client.get(f"/v1/holds/{kept['id']}", headers=till)).json()["status"] == "open"
    await books_ok(client, operator, engine)


async def test_a_lapsed_hold_can_be_neither_captured_nor_voided(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    hold = await open_hold(client, till, card, 30)
    await lapse(engine, hold["id"])
    before = await ledger_state(engine)

    problem(await capture_hold(client, till, hold["id"]), 409, "hold_expired")
    problem(await capture_hold(client, till, hold["id"], 10), 409, "hold_expired")
    problem(await void_hold(client, till, hold["id"]), 409, "hold_expired")
    problem(await capture_hold(client, operator, hold["id"]), 409, "hold_expired")
    assert await ledger_state(engine) == before
    await assert_balance(client, till, card, available=amounts(100), held=amounts(0))
    await books_ok(client, operator, engine)


async def test_spending_the_freed_value_releases_the_hold_first(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    hold = await open_hold(client, till, card, 30)
    await lapse(engine, hold["id"])

    r = await redeem(client, till, card, 100, "R-ALL")
    assert r.status_code == 201, r.text
    assert r.json()["balance"] == amounts(0)
    await assert_balance(client, till, card, available=amounts(0), held=amounts(0))
    assert await account_row(engine, card) == (0, 0)
    items = await history(client, operator, card)
    # The release and the redemption share a database transaction (and posted_at): either order.
    assert sorted(items[:2]) == [
        ("redemption", -100, 0, None),
        ("release", 30, 0, "hold expired"),
    ]
    assert items[2:] == [("hold", -30, 0, None), ("award", 100, 0, "test funding")]

    read = (await client.get(f"/v1/holds/{hold['id']}", headers=till)).json()
    assert read["status"] == "expired"
    assert read["settled_at"] is not None and read["settled_by"] is not None
    # Released now: capture and void meet a closed hold, which says how it ended.
    for r in (
        await capture_hold(client, till, hold["id"]),
        await void_hold(client, till, hold["id"]),
    ):
        body = problem(r, 409, "hold_not_open")
        assert (body["hold_status"], body["settled_by"]) == ("expired", read["settled_by"])
    assert await _sweep(app) == 0
    await books_ok(client, operator, engine)


async def test_a_refused_posting_still_leaves_the_lapsed_hold_counted_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """A redemption of more than the card has, lapsed hold included, is refused; the hold's
    value is still there for the next one."""
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    hold = await open_hold(client, till, card, 30)
    await lapse(engine, hold["id"])
    problem(await redeem(client, till, card, 101, "R-1"), 422, "insufficient_balance")
    await assert_balance(client, till, card, available=amounts(100), held=amounts(0))
    r = await redeem(client, till, card, 100, "R-2")
    assert r.status_code == 201, r.text
    assert await _releases(engine) == {hold["id"]: 1}
    await books_ok(client, operator, engine)


async def test_a_new_hold_and_an_accrual_release_lapsed_holds_first(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    old = await open_hold(client, till, card, 60)
    await lapse(engine, old["id"])

    # All 100 can be held again: the lapsed 60 is released in the same database transaction.
    new = await open_hold(client, till, card, 100)
    assert new["balance"] == amounts(0)
    assert await account_row(engine, card) == (0, 100)
    items = [h[:2] for h in await history(client, operator, card)]
    assert sorted(items[:2]) == [("hold", -100), ("release", 60)]
    assert items[2:] == [("hold", -60), ("award", 100)]
    await lapse(engine, new["id"])
    award = {"kind": "award", "card_number": card, "points": 5, "reason": "bonus"}
    r = await client.post("/v1/accruals", json=award, headers={**operator, **idem()})
    assert r.status_code == 201, r.text
    assert r.json()["balance"] == amounts(105)
    assert await account_row(engine, card) == (105, 0)
    latest = [h[:3] for h in await history(client, operator, card)][:2]
    assert sorted(latest) == [("award", 5, 0), ("release", 100, 0)]
    assert await _releases(engine) == {old["id"]: 1, new["id"]: 1}
    assert await _sweep(app) == 0
    await books_ok(client, operator, engine)


async def test_a_hold_runs_out_by_the_clock(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    hold = await open_hold(client, till, card, 40, ttl_seconds=1)
    assert (await client.get(f"/v1/holds/{hold['id']}", headers=till)).json()["status"] == "open"
    await asyncio.sleep(1.1)
    assert (await client.get(f"/v1/holds/{hold['id']}", headers=till)).json()["status"] == "expired"
    await assert_balance(client, till, card, available=amounts(100), held=amounts(0))
    problem(await capture_hold(client, till, hold["id"]), 409, "hold_expired")
    assert await _sweep(app) == 1
    await books_ok(client, operator, engine)


async def test_the_sweep_releases_every_lapsed_hold_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    first = (await funded_card(client, operator, 100))["card_number"]
    second = (await funded_card(client, operator, 100))["card_number"]
    lapsed = [
        await open_hold(client, till, first, 10),
        await open_hold(client, till, first, 20),
        await open_hold(client, till, second, 30),
    ]
    kept = await open_hold(client, till, second, 40)
    captured = await open_hold(client, till, second, 5)
    assert (await capture_hold(client, till, captured["id"])).status_code == 200
    for hold in lapsed:
        await lapse(engine, hold["id"])
    before = await ledger_state(engine)
    # Nothing lapsed is released by reading.
    await assert_balance(client, till, first, available=amounts(100), held=amounts(0))
    await assert_balance(client, till, second, available=amounts(55), held=amounts(40))
    assert await ledger_state(engine) == before

    assert await _sweep(app) == 3
    assert await account_row(engine, first) == (100, 0)
    assert await account_row(engine, second) == (55, 40)
    await assert_balance(client, till, first, available=amounts(100), held=amounts(0))
    await assert_balance(client, till, second, available=amounts(55), held=amounts(40))
    items = await history(client, operator, first)
    assert sorted(items[:2]) == [
        ("release", 10, 0, "hold expired"),
        ("release", 20, 0, "hold expired"),
    ]
    assert (await history(client, operator, second))[0] == ("release", 30, 0, "hold expired")
    releases = await _releases(engine)
    assert [releases[h["id"]] for h in lapsed] == [1, 1, 1]
    assert (releases[kept["id"]], releases[captured["id"]]) == (0, 0)

    for hold in lapsed:
        read = (await client.get(f"/v1/holds/{hold['id']}", headers=till)).json()
        assert read["status"] == "expired" and read["settled_by"] is not None
        body = problem(await capture_hold(client, till, hold["id"]), 409, "hold_not_open")
        assert (body["hold_status"], body["settled_by"]) == ("expired", read["settled_by"])
    assert (await client.get(f"/v1/holds/{kept['id']}", headers=till)).json()["status"] == "open"

    # A second sweep finds nothing; the hold still open can be captured.
    after = await ledger_state(engine)
    assert await _sweep(app) == 0
    assert await ledger_state(engine) == after
    r = await capture_hold(client, till, kept["id"])
    assert r.status_code == 200, r.text
    assert r.json()["balance"] == amounts(55)
    await books_ok(client, operator, engine)


async def test_concurrent_sweeps_release_each_hold_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    cards = [(await funded_card(client, operator, 100))["card_number"] for _ in range(6)]
    holds: list[dict[str, Any]] = []
    for card in cards:
        holds += [await open_hold(client, till, card, 10), await open_hold(client, till, card, 15)]
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE holds SET expires_at = now() - interval '1 second'"))

    # Small pages, so the sweeps interleave over several transactions each.
    counts = await asyncio.gather(_sweep(app, page=3), _sweep(app, page=3), _sweep(app, page=5))
    assert sum(counts) == 12, counts
    assert await _releases(engine) == {h["id"]: 1 for h in holds}
    for card in cards:
        assert await account_row(engine, card) == (100, 0)
        await assert_balance(client, till, card, available=amounts(100), held=amounts(0))
    assert await _sweep(app) == 0
    await books_ok(client, operator, engine)


async def test_the_sweep_racing_postings_on_the_cards_releases_each_hold_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    cards = [(await funded_card(client, operator, 100))["card_number"] for _ in range(8)]
    holds = [await open_hold(client, till, card, 40) for card in cards]
    # The sweep takes the cards from the first on (the oldest expiry first), the redemptions
    # come from the last on: they meet somewhere in between.
    async with engine.begin() as conn:
        for i, hold in enumerate(holds):
            await conn.execute(
                text(
                    "UPDATE holds SET expires_at = now() - :ago * interval '1 second'"
                    " WHERE id = :id"
                ),
                {"ago": len(holds) - i, "id": uuid.UUID(hold["id"])},
            )

    # Each card spends all it has while the sweep runs: whichever releases the hold first,
    # the other finds it released.
    async def spend_later(i: int, card: str) -> Response:
        await asyncio.sleep(0.003 * (len(cards) - i))
        return await redeem(client, till, card, 100, f"R-{i}")

    spent, swept = await asyncio.gather(
        asyncio.gather(*(spend_later(i, card) for i, card in enumerate(cards))),
        asyncio.gather(_sweep_later(app, 0, page=1), _sweep_later(app, 0.005, page=1)),
    )
    # A release posted with the redemption shares its database transaction (its posted_at).
    async with engine.connect() as conn:
        by_postings = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM transactions r JOIN transactions p"
                    " ON p.card_id = r.card_id AND p.type = 'redemption'"
                    " AND p.posted_at = r.posted_at WHERE r.type = 'release'"
                )
            )
        ).scalar_one()
    assert sum(swept) + by_postings == len(cards), (swept, by_postings)
    for r in spent:
        assert r.status_code == 201, r.text
        assert r.json()["balance"] == amounts(0)
    assert await _releases(engine) == {h["id"]: 1 for h in holds}
    for card in cards:
        assert await account_row(engine, card) == (0, 0)
        items = [h[:2] for h in await history(client, operator, card)]
        assert sorted(items[:2]) == [("redemption", -100), ("release", 40)]
        assert items[2:] == [("hold", -40), ("award", 100)]
    await books_ok(client, operator, engine)


# --------------------------------------------------------------------------------------------
# The sweep as a command


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("fresh_settings")
async def test_the_sweep_holds_command(
    database_url: str,
    app: FastAPI,
    client: AsyncClient,
    operator: dict[str, str],
    engine: AsyncEngine,
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    hold = await open_hold(client, till, card, 30)
    await open_hold(client, till, card, 20)
    await lapse(engine, hold["id"])

    def invoke() -> tuple[int, str]:
        result = CliRunner().invoke(
            cli,
            ["sweep-holds"],
            env={"DATABASE_URL": database_url, "PROGRAM_CURRENCY": "EUR"},
            catch_exceptions=False,
        )
        return result.exit_code, result.output

    try:
        assert await asyncio.to_thread(invoke) == (0, "released 1 expired holds\n")
        assert await asyncio.to_thread(invoke) == (0, "released 0 expired holds\n")
    finally:
        get_settings.cache_clear()
    assert await account_row(engine, card) == (80, 20)
    assert (await history(client, operator, card))[0] == ("release", 30, 0, "hold expired")
    await books_ok(client, operator, engine)


# --------------------------------------------------------------------------------------------
# Bugs these tests found (fixed)


async def test_an_expiry_release_can_be_read_as_a_transaction(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """The release the sweep posts has no API key (the service posts it itself): reading it
    must still work, like any transaction in the card's history."""
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    hold = await open_hold(client, till, card, 30)
    await lapse(engine, hold["id"])
    assert await _sweep(app) == 1
    release_id = (await client.get(f"/v1/holds/{hold['id']}", headers=till)).json()["settled_by"]

    r = await client.get(f"/v1/transactions/{release_id}", headers=operator)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["type"], body["corrects_id"], body["api_key_id"]) == ("release", hold["id"], None)
    assert sorted((e["account_kind"], e["amount"]) for e in body["entries"]) == [
        ("card", 30),
        ("operator_held", -30),
    ]


@pytest.mark.parametrize("settle", ["capture", "void"])
async def test_settling_a_hold_answers_the_balance_the_card_has_available(
    settle: str, app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """The `balance` in a capture's or a void's answer is what the card has available
    afterwards, as GET /v1/cards/{n}/balance says: another hold on the card that ran out counts
    as available there."""
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    settled = await open_hold(client, till, card, 30)
    lapsed = await open_hold(client, till, card, 20)
    await lapse(engine, lapsed["id"])

    if settle == "capture":
        r = await capture_hold(client, till, settled["id"], 10)
        expected = amounts(90)  # 100 - 10 captured; the lapsed 20 is available again
    else:
        r = await void_hold(client, till, settled["id"])
        expected = amounts(100)
    assert r.status_code == 200, r.text
    await assert_balance(client, till, card, available=expected, held=amounts(0))
    assert r.json()["balance"] == expected
    await books_ok(client, operator, engine)

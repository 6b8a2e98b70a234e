"""Statements: what each partner's accounts moved in a period, valued at the prices the
postings recorded, plus fees; one net amount, posted to the ledger; late postings land on the
next statement; closing twice (or at once) closes once; a partner reads its own only."""

import asyncio
import uuid

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.agreements.test_prices import price_body, set_price
from tests.conftest import idem
from tests.factories.cards import issue_card
from tests.factories.partners import partner_with_key
from tests.factories.postings import purchase, redeem
from tests.ledger.helpers_ledger import scalar
from tests.ledger.test_returns import assert_problem, give_back, ledger_ok
from tests.settlement.helpers import (
    close_at,
    later,
    lines,
    priced_partner,
    statement,
    statements_of,
)


async def test_a_period_closes_into_one_statement_per_partner_with_its_net_posted(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    shop, shop_till = await partner_with_key(app, client, operator)
    cafe, cafe_till = await partner_with_key(app, client, operator)
    await set_price(client, operator, shop["id"], price_body(800, 600))
    await set_price(client, operator, cafe["id"], price_body(700, 650, fee_per_period=1_000))
    card = (await issue_card(client, operator))["card_number"]
    bought = await purchase(client, shop_till, card, 10_000, "R-1")  # 100 points, 500 cashback
    assert bought.status_code == 201, bought.text
    assert (await redeem(client, cafe_till, card, 50, "S-1")).status_code == 201
    assert (await redeem(client, cafe_till, card, 200, "S-2", asset="cashback")).status_code == 201

    [(_, _, made)] = await close_at(app, later(40))

    assert made == 2
    by_partner = {s["partner_id"]: s for s in await statements_of(client, operator)}
    shop_statement = await statement(client, operator, by_partner[shop["id"]]["id"])
    cafe_statement = await statement(client, operator, by_partner[cafe["id"]]["id"])
    assert lines(shop_statement) == [
        ("cashback_issued", False, None, 1, 500, 500),
        ("points_issued", False, 800, 1, 100, 80),
    ]
    assert (shop_statement["net_amount"], shop_statement["direction"]) == (580, "partner_pays")
    assert lines(cafe_statement) == [
        ("cashback_accepted", False, None, 1, 200, -200),
        ("points_accepted", False, 650, 1, 50, -33),  # 32.5, half away from zero
        ("fee_fixed", False, None, 0, 0, 1_000),
    ]
    assert (cafe_statement["net_amount"], cafe_statement["direction"]) == (767, "partner_pays")
    r = await client.get(f"/v1/partners/{shop['id']}/settlement", headers=shop_till)
    assert r.json()["balance"] == -580 and r.json()["direction"] == "partner_pays"
    await ledger_ok(client, operator, engine)


async def test_closing_again_or_at_once_closes_nothing_twice(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _shop, till, card = await priced_partner(app, client, operator)
    assert (await purchase(client, till, card, 10_000, "R-1")).status_code == 201

    results = await asyncio.gather(*(close_at(app, later(40)) for _ in range(3)))

    assert sorted(len(r) for r in results) == [0, 0, 1]
    assert await close_at(app, later(40)) == []
    assert await scalar(engine, "SELECT count(*) FROM statements") == 1
    assert await scalar(engine, "SELECT count(*) FROM settled_transactions") == 1


async def test_a_posting_after_its_period_closed_lands_on_the_next_statement_as_late(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    shop, till, card = await priced_partner(app, client, operator)
    first = await purchase(client, till, card, 10_000, "R-1")
    assert len(await close_at(app, later(40))) >= 1
    # Posted now: its period (this month) is closed already.
    assert (await purchase(client, till, card, 20_000, "R-2")).status_code == 201
    returned = await give_back(client, till, first.json()["transaction_id"], 10_000)
    assert returned.status_code == 201, returned.text

    await close_at(app, later(80))

    newest = (await statements_of(client, operator, shop["id"]))[0]
    assert lines(await statement(client, operator, newest["id"])) == [
        ("cashback_issued", True, None, 1, 1_000, 1_000),
        ("cashback_issued_corrected", True, None, 1, -500, -500),
        ("points_issued", True, 800, 1, 200, 160),
        ("points_issued_corrected", True, 800, 1, -100, -80),
    ]
    assert await scalar(engine, "SELECT count(*) FROM settled_transactions") == 3


async def test_a_partner_reads_its_own_statements_only_and_downloads_them(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    shop, till = await partner_with_key(app, client, operator)
    other, other_till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    assert (await purchase(client, till, card, 10_000, "R-1")).status_code == 201
    assert (await purchase(client, other_till, card, 10_000, "R-2")).status_code == 201
    await close_at(app, later(40))

    own = await statements_of(client, till)
    assert [s["partner_id"] for s in own] == [shop["id"]]
    # Asking for another partner's lists one's own; reading another's is not found.
    assert await statements_of(client, till, other["id"]) == own
    theirs = (await statements_of(client, other_till))[0]["id"]
    assert_problem(
        await client.get(f"/v1/statements/{theirs}", headers=till), 404, "statement_not_found"
    )
    assert_problem(
        await client.get(f"/v1/statements/{theirs}/csv", headers=till), 404, "statement_not_found"
    )
    assert_problem(
        await client.get(f"/v1/partners/{other['id']}/settlement", headers=till),
        404,
        "partner_not_found",
    )
    csv = await client.get(f"/v1/statements/{own[0]['id']}/csv", headers=till)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    rows = csv.text.splitlines()
    assert rows[1] == f"partner,{shop['code']}"
    assert rows[8:] == [
        "line_no,kind,late,points_price,postings,quantity,amount",
        "1,cashback_issued,False,,1,500,500",
        "2,points_issued,False,,1,100,0",
    ]


async def test_payments_settle_what_a_partner_owes(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    shop, till, card = await priced_partner(app, client, operator)
    assert (await purchase(client, till, card, 10_000, "R-1")).status_code == 201
    await close_at(app, later(40))
    [owed] = await statements_of(client, operator, shop["id"])
    url = f"/v1/partners/{shop['id']}/payments"
    body = {
        "direction": "received",
        "amount": 500,
        "reference": "BANK-1",
        "statement_id": owed["id"],
    }

    paid = await client.post(url, json=body, headers={**operator, "Idempotency-Key": "P-1"})
    again = await client.post(url, json=body, headers={**operator, "Idempotency-Key": "P-1"})

    assert paid.status_code == 201, paid.text
    assert again.json() == paid.json()
    assert paid.json()["outstanding"]["balance"] == -80
    assert_problem(
        await client.post(url, json=body, headers={**operator, **idem()}),
        409,
        "payment_reference_taken",
    )
    rest = {"direction": "received", "amount": 80, "reference": "BANK-2"}
    done = await client.post(url, json=rest, headers={**operator, **idem()})
    assert done.json()["outstanding"] == {
        "partner_id": shop["id"],
        "statements": 580,
        "payments": 580,
        "balance": 0,
        "direction": "nothing",
        "currency": "EUR",
    }
    for bad in (
        {**rest, "amount": 0},
        {**rest, "amount": "80"},
        {**rest, "direction": "maybe"},
        {**rest, "reference": ""},
        {**rest, "extra": 1},
    ):
        assert_problem(
            await client.post(url, json=bad, headers={**operator, **idem()}),
            422,
            "validation_error",
        )
    other_statement = {**rest, "reference": "BANK-3", "statement_id": str(uuid.uuid4())}
    assert_problem(
        await client.post(url, json=other_statement, headers={**operator, **idem()}),
        404,
        "statement_not_found",
    )
    assert_problem(
        await client.post(url, json={**rest, "reference": "X"}, headers={**till, **idem()}),
        403,
        "forbidden",
    )
    await ledger_ok(client, operator, engine)


async def test_statements_their_lines_and_payments_cannot_be_changed(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _shop, till, card = await priced_partner(app, client, operator)
    assert (await purchase(client, till, card, 10_000, "R-1")).status_code == 201
    await close_at(app, later(40))

    for statement_sql in (
        "UPDATE statements SET net_amount = 0",
        "DELETE FROM statement_lines",
        "DELETE FROM settled_transactions",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text(statement_sql))
    assert await scalar(engine, "SELECT net_amount FROM statements") == 580


async def test_bad_input_to_closing_and_listing_is_refused_and_writes_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    for body in (
        {"through": "tomorrow"},
        {"through": "2026-12-01T00:00:00"},  # no time zone
        {"until": "2026-12-01T00:00:00Z"},
        [],
    ):
        r = await client.post("/v1/settlements/close", json=body, headers={**operator, **idem()})
        assert_problem(r, 422, "validation_error")
    r = await client.post(
        "/v1/settlements/close",
        content=b'{"through": "' + b"9" * 70_000 + b'"}',
        headers={**operator, **idem(), "Content-Type": "application/json"},
    )
    assert r.status_code == 413, r.text
    for params in ({"limit": 0}, {"limit": 501}, {"limit": "all"}, {"partner_id": "shop"}):
        r = await client.get("/v1/statements", params=params, headers=operator)
        assert_problem(r, 422, "validation_error")
    assert_problem(
        await client.get("/v1/statements/not-a-uuid", headers=operator), 422, "validation_error"
    )
    assert await scalar(engine, "SELECT count(*) FROM settlement_periods") == 0

"""POST /v1/batches: many purchases, awards and redemptions in one request.

Items apply in order, each with the answer (or the problem) the single endpoint would give;
one refusal does not stop the others unless the batch is atomic. Every check of what was
written reads the database directly, not through the API.
"""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cards.numbers import luhn_check_digit
from tests.conftest import idem
from tests.factories.cards import funded_card, issue_card
from tests.factories.partners import create_partner, partner_with_key

BATCHES = "/v1/batches"
PROBLEM_JSON = "application/problem+json"
REPLAYED = "Idempotent-Replayed"
MIB = 1024 * 1024


# Builders ------------------------------------------------------------------------------------


def purchase(card: str, amount: int, reference: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "purchase",
        "card_number": card,
        "amount": amount,
        "currency": "EUR",
        "reference": reference,
        **extra,
    }


def redemption(
    card: str, amount: int, reference: str, asset: str = "points", **extra: Any
) -> dict[str, Any]:
    return {
        "type": "redemption",
        "card_number": card,
        "asset": asset,
        "amount": amount,
        "reference": reference,
        **extra,
    }


def award(card: str, points: int, reference: str | None = None, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "award",
        "card_number": card,
        "points": points,
        "reason": "batch award",
        **extra,
    }
    if reference is not None:
        item["reference"] = reference
    return item


def unknown_card_number() -> str:
    """Luhn-valid, with a prefix ('9') the program never issues ('7')."""
    partial = "9" + str(uuid.uuid4().int)[:14]
    return partial + luhn_check_digit(partial)


async def post_batch(
    client: AsyncClient,
    headers: dict[str, str],
    items: list[dict[str, Any]],
    *,
    atomic: bool | None = None,
    key: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"items": items}
    if atomic is not None:
        body["atomic"] = atomic
    return await client.post(BATCHES, json=body, headers={**headers, **(key or idem())})


async def post_single(
    client: AsyncClient, headers: dict[str, str], item: dict[str, Any]
) -> Response:
    """The same posting through POST /v1/accruals or /v1/redemptions."""
    body = {k: v for k, v in item.items() if k != "type"}
    if item["type"] == "redemption":
        path = "/v1/redemptions"
    else:
        path = "/v1/accruals"
        body["kind"] = item["type"]
    return await client.post(path, json=body, headers={**headers, **idem()})


def statuses(body: dict[str, Any]) -> list[int]:
    return [item["status"] for item in body["items"]]


def codes(body: dict[str, Any]) -> list[str | None]:
    return [item["problem"]["code"] if item["problem"] else None for item in body["items"]]


def balances(body: dict[str, Any]) -> list[tuple[int, int] | None]:
    return [
        (item["result"]["balance"]["points"], item["result"]["balance"]["cashback"])
        if item["result"]
        else None
        for item in body["items"]
    ]


# Database reads --------------------------------------------------------------------------------


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar_one()


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def transaction_count(engine: AsyncEngine) -> int:
    return int(await scalar(engine, "SELECT count(*) FROM transactions"))


async def entry_count(engine: AsyncEngine) -> int:
    return int(await scalar(engine, "SELECT count(*) FROM entries"))


async def references_in_db(engine: AsyncEngine) -> list[str]:
    found = await rows(
        engine, "SELECT reference FROM transactions WHERE reference IS NOT NULL ORDER BY reference"
    )
    return [r.reference for r in found]


async def card_balance(engine: AsyncEngine, card_number: str) -> tuple[int, int]:
    """(points, cashback) as stored on the card's accounts."""
    found = await rows(
        engine,
        """
        SELECT a.asset, a.balance FROM accounts a JOIN cards c ON c.id = a.card_id
        WHERE c.card_number = :n
        """,
        n=card_number,
    )
    by_asset = {r.asset: int(r.balance) for r in found}
    return by_asset["points"], by_asset["cashback"]


async def card_transaction_count(engine: AsyncEngine, card_number: str) -> int:
    return int(
        await scalar(
            engine,
            "SELECT count(*) FROM transactions t JOIN cards c ON c.id = t.card_id "
            "WHERE c.card_number = :n",
            n=card_number,
        )
    )


# Order and running balances ---------------------------------------------------------------------


async def test_items_apply_in_order_with_running_balances(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    n = (await issue_card(client, operator))["card_number"]
    items = [
        # Before the purchase the card holds nothing: refused.
        redemption(n, 5, "early"),
        # 10.00 EUR: 10 points, 50 cents.
        purchase(n, 1_000, "p1"),
        # Now it can spend what the purchase earned.
        redemption(n, 5, "r1"),
        redemption(n, 20, "r2", asset="cashback"),
        # 2.50 EUR: 2 points, 12 cents (12.5 rounded down).
        purchase(n, 250, "p2"),
        # Holds 7 points: 8 is one too many.
        redemption(n, 8, "r3"),
        # 0.10 EUR earns nothing: 200, nothing posted.
        purchase(n, 10, "tiny"),
        redemption(n, 7, "r4"),
        redemption(n, 42, "r5", asset="cashback"),
    ]
    r = await post_batch(client, till, items)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["atomic"] is False
    assert statuses(body) == [422, 201, 201, 201, 201, 422, 200, 201, 201]
    assert body["posted"] == 6
    assert body["refused"] == 2
    assert [item["index"] for item in body["items"]] == list(range(len(items)))
    assert [item["reference"] for item in body["items"]] == [i["reference"] for i in items]
    assert balances(body) == [
        None,
        (10, 50),
        (5, 50),
        (5, 30),
        (7, 42),
        None,
        (7, 42),
        (0, 42),
        (0, 0),
    ]
    early, short = body["items"][0]["problem"], body["items"][5]["problem"]
    assert (early["code"], early["available"], early["requested"]) == ("insufficient_balance", 0, 5)
    assert (short["code"], short["available"], short["requested"]) == ("insufficient_balance", 7, 8)
    assert body["items"][1]["result"]["earned"] == {"points": 10, "cashback": 50}
    assert body["items"][4]["result"]["earned"] == {"points": 2, "cashback": 12}
    tiny = body["items"][6]
    assert tiny["result"]["transaction_id"] is None
    assert tiny["result"]["earned"] == {"points": 0, "cashback": 0}
    for item in body["items"]:
        assert (item["result"] is None) == (item["status"] >= 400)
        assert (item["problem"] is None) == (item["status"] < 400)

    # The books: six transactions, the stored balances are the last answer's.
    assert await card_transaction_count(engine, n) == 6
    assert await card_balance(engine, n) == (0, 0)
    assert await references_in_db(engine) == ["p1", "p2", "r1", "r2", "r4", "r5"]
    posted_ids = {
        uuid.UUID(item["result"]["transaction_id"])
        for item in body["items"]
        if item["status"] == 201
    }
    in_db = await rows(
        engine,
        "SELECT t.id FROM transactions t JOIN cards c ON c.id = t.card_id WHERE c.card_number = :n",
        n=n,
    )
    assert {r.id for r in in_db} == posted_ids


# One refusal does not stop the others ------------------------------------------------------------


async def test_refused_items_do_not_stop_the_others_partner_key(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    other = await create_partner(client, operator)
    n = (await issue_card(client, operator))["card_number"]
    blocked = (await funded_card(client, operator, 100))["card_number"]
    r = await client.post(f"/v1/cards/{blocked}/block", headers=operator)
    assert r.status_code == 200, r.text
    earlier = await post_single(client, till, purchase(n, 500, "earlier"))
    assert earlier.status_code == 201, earlier.text
    earlier_id = earlier.json()["transaction_id"]
    assert await card_balance(engine, n) == (5, 25)
    before = await transaction_count(engine)

    items = [
        purchase(n, 1_000, "ok-0"),
        purchase(unknown_card_number(), 1_000, "bad-unknown"),
        purchase(blocked, 1_000, "bad-blocked"),
        redemption(blocked, 10, "bad-blocked-redeem"),
        redemption(n, 500, "bad-insufficient"),
        purchase(n, 1_000, "earlier"),
        purchase(n, 1_000, "bad-currency", currency="USD"),
        purchase(n, 1_000, "bad-partner", partner_id=other["id"]),
        redemption(n, 4, "ok-8"),
        purchase(n, 200, "ok-9"),
    ]
    r = await post_batch(client, till, items)
    assert r.status_code == 200, r.text
    body = r.json()
    assert statuses(body) == [201, 404, 409, 409, 422, 409, 422, 403, 201, 201]
    assert codes(body) == [
        None,
        "card_not_found",
        "card_blocked",
        "card_blocked",
        "insufficient_balance",
        "duplicate_reference",
        "currency_mismatch",
        "forbidden",
        None,
        None,
    ]
    assert (body["posted"], body["refused"]) == (3, 7)
    assert body["items"][5]["problem"]["transaction_id"] == earlier_id
    assert body["items"][4]["problem"]["available"] == 15
    assert balances(body)[0] == (15, 75)
    assert balances(body)[8] == (11, 75)
    assert balances(body)[9] == (13, 85)

    # Nothing written for the refused items.
    assert await transaction_count(engine) == before + 3
    assert await references_in_db(engine) == ["earlier", "ok-0", "ok-8", "ok-9"]
    assert await card_balance(engine, n) == (13, 85)
    assert await card_balance(engine, blocked) == (100, 0)

    # Each refusal is the problem the single endpoint gives for the same posting.
    for index in (1, 2, 3, 5, 6, 7):
        single = await post_single(client, till, items[index])
        assert single.status_code == body["items"][index]["status"], (index, single.text)
        problem = body["items"][index]["problem"]
        assert single.json() == problem, index
    assert await transaction_count(engine) == before + 3


async def test_refused_items_do_not_stop_the_others_operator_key(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    shop = await create_partner(client, operator)
    closed = await create_partner(client, operator, can_earn=False, can_redeem=False)
    n = (await funded_card(client, operator, 50))["card_number"]
    before = await transaction_count(engine)
    items = [
        purchase(n, 1_000, "ok-0", partner_id=shop["id"]),
        purchase(n, 1_000, "bad-closed", partner_id=closed["id"]),
        redemption(n, 5, "bad-closed-redeem", partner_id=closed["id"]),
        purchase(n, 1_000, "bad-no-partner"),
        purchase(n, 1_000, "bad-ghost-partner", partner_id=str(uuid.uuid4())),
        award(n, 7, "ok-5"),
        redemption(n, 67, "ok-6"),
        redemption(n, 1, "bad-empty"),
    ]
    r = await post_batch(client, operator, items)
    assert r.status_code == 200, r.text
    body = r.json()
    assert statuses(body) == [201, 409, 409, 422, 404, 201, 201, 422]
    assert codes(body) == [
        None,
        "partner_cannot_earn",
        "partner_cannot_redeem",
        "partner_required",
        "partner_not_found",
        None,
        None,
        "insufficient_balance",
    ]
    assert (body["posted"], body["refused"]) == (3, 5)
    assert balances(body)[6] == (0, 50)
    assert await transaction_count(engine) == before + 3
    assert await references_in_db(engine) == ["ok-0", "ok-5", "ok-6"]
    assert await card_balance(engine, n) == (0, 50)
    for index in (1, 2, 3, 4):
        single = await post_single(client, operator, items[index])
        assert single.status_code == body["items"][index]["status"], (index, single.text)
        assert single.json() == body["items"][index]["problem"], index


# References inside one batch --------------------------------------------------------------------


async def test_same_reference_twice_in_a_batch_posts_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    n = (await issue_card(client, operator))["card_number"]
    m = (await issue_card(client, operator))["card_number"]
    items = [
        purchase(n, 1_000, "R-1"),
        # Same reference, another card and amount: still the same receipt.
        purchase(m, 3_000, "R-1"),
        # The same reference for another type of transaction is another receipt.
        redemption(n, 3, "R-1"),
        redemption(n, 3, "R-1"),
    ]
    r = await post_batch(client, till, items)
    assert r.status_code == 200, r.text
    body = r.json()
    assert statuses(body) == [201, 409, 201, 409]
    assert codes(body) == [None, "duplicate_reference", None, "duplicate_reference"]
    first_purchase = body["items"][0]["result"]["transaction_id"]
    first_redemption = body["items"][2]["result"]["transaction_id"]
    assert body["items"][1]["problem"]["transaction_id"] == first_purchase
    assert body["items"][3]["problem"]["transaction_id"] == first_redemption
    assert (body["posted"], body["refused"]) == (2, 2)
    found = await rows(engine, "SELECT id, type FROM transactions WHERE reference = 'R-1'")
    assert sorted((str(r.id), r.type) for r in found) == sorted(
        [(first_purchase, "accrual"), (first_redemption, "redemption")]
    )
    assert await card_balance(engine, n) == (7, 50)
    assert await card_balance(engine, m) == (0, 0)
    # What the single endpoint says about the duplicate now: the same transaction.
    single = await post_single(client, till, items[1])
    assert single.status_code == 409
    assert single.json() == body["items"][1]["problem"]


async def test_reference_refused_earlier_in_the_batch_may_be_reused(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    n = (await issue_card(client, operator))["card_number"]
    items = [
        redemption(n, 5, "R-9"),  # nothing to spend yet: refused, nothing posted
        purchase(n, 1_000, "P-9"),
        redemption(n, 5, "R-9"),  # the same receipt, now affordable
        redemption(n, 1, "R-9"),  # and now a duplicate of the one above
    ]
    r = await post_batch(client, till, items)
    assert r.status_code == 200, r.text
    body = r.json()
    assert statuses(body) == [422, 201, 201, 409]
    assert codes(body) == ["insufficient_balance", None, None, "duplicate_reference"]
    posted = body["items"][2]["result"]["transaction_id"]
    assert body["items"][3]["problem"]["transaction_id"] == posted
    found = await rows(engine, "SELECT id FROM transactions WHERE reference = 'R-9'")
    assert [str(r.id) for r in found] == [posted]
    assert await card_balance(engine, n) == (5, 50)


# References across batches ---------------------------------------------------------------------


async def test_reference_posted_by_an_earlier_batch_or_single_request_is_a_duplicate(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    _, other_till = await partner_with_key(app, client, operator)
    n = (await funded_card(client, operator, 100))["card_number"]

    first = await post_batch(client, till, [purchase(n, 1_000, "B-1"), redemption(n, 10, "B-2")])
    assert first.status_code == 200, first.text
    assert statuses(first.json()) == [201, 201]
    batch_ids = [item["result"]["transaction_id"] for item in first.json()["items"]]
    single = await post_single(client, till, purchase(n, 1_000, "S-1"))
    assert single.status_code == 201, single.text
    single_id = single.json()["transaction_id"]
    award_single = await post_single(client, operator, award(n, 3, "A-1"))
    assert award_single.status_code == 201, award_single.text
    before = await transaction_count(engine)

    second = await post_batch(
        client,
        till,
        [
            purchase(n, 2_000, "B-1"),
            redemption(n, 1, "B-2"),
            purchase(n, 2_000, "S-1"),
            purchase(n, 2_000, "NEW"),
        ],
    )
    assert second.status_code == 200, second.text
    body = second.json()
    assert statuses(body) == [409, 409, 409, 201]
    assert [p["transaction_id"] for p in (i["problem"] for i in body["items"][:3])] == [
        *batch_ids,
        single_id,
    ]
    # Another partner's receipt numbers are its own.
    third = await post_batch(client, other_till, [purchase(n, 1_000, "B-1")])
    assert third.status_code == 200, third.text
    assert statuses(third.json()) == [201]
    # Operator references: an award referenced by a single request.
    fourth = await post_batch(client, operator, [award(n, 3, "A-1"), award(n, 3, "A-2")])
    assert fourth.status_code == 200, fourth.text
    assert statuses(fourth.json()) == [409, 201]
    assert (
        fourth.json()["items"][0]["problem"]["transaction_id"]
        == award_single.json()["transaction_id"]
    )
    assert await transaction_count(engine) == before + 3
    dup = await rows(
        engine,
        "SELECT partner_id, type, reference, count(*) AS n FROM transactions "
        "WHERE reference IS NOT NULL GROUP BY 1, 2, 3 HAVING count(*) > 1",
    )
    assert dup == []
    assert (
        int(
            await scalar(
                engine,
                "SELECT count(*) FROM transactions WHERE reference = 'B-1' AND partner_id = :p",
                p=uuid.UUID(partner["id"]),
            )
        )
        == 1
    )


# Atomic batches ---------------------------------------------------------------------------------


async def test_atomic_batch_all_valid_posts_everything(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    n = (await issue_card(client, operator))["card_number"]
    items = [purchase(n, 1_000, "a-1"), redemption(n, 10, "a-2"), purchase(n, 10, "a-3")]
    r = await post_batch(client, till, items, atomic=True)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["atomic"] is True
    assert statuses(body) == [201, 201, 200]
    assert (body["posted"], body["refused"]) == (2, 0)
    assert balances(body) == [(10, 50), (0, 50), (0, 50)]
    assert await card_transaction_count(engine, n) == 2
    assert await card_balance(engine, n) == (0, 50)


async def test_atomic_batch_with_one_refusal_posts_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    n = (await funded_card(client, operator, 20))["card_number"]
    m = (await issue_card(client, operator))["card_number"]
    before = (await transaction_count(engine), await entry_count(engine))
    items = [
        purchase(n, 1_000, "x-1"),
        redemption(n, 25, "x-2"),
        purchase(m, 10, "x-3"),  # earns nothing: would be 200
        redemption(n, 31, "x-4"),  # 20 + 10 - 25 = 5 left: refused
        purchase(m, 5_000, "x-5"),
    ]
    key = idem()
    r = await post_batch(client, till, items, atomic=True, key=key)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM_JSON
    problem = r.json()
    assert problem["code"] == "batch_refused"
    assert problem["status"] == 422
    assert problem["atomic"] is True
    assert (problem["posted"], problem["refused"]) == (0, 1)
    assert statuses(problem) == [424, 424, 424, 422, 424]
    assert [i["index"] for i in problem["items"]] == [0, 1, 2, 3, 4]
    assert [i["reference"] for i in problem["items"]] == ["x-1", "x-2", "x-3", "x-4", "x-5"]
    refused = problem["items"][3]["problem"]
    assert (refused["code"], refused["available"], refused["requested"]) == (
        "insufficient_balance",
        5,
        31,
    )
    for index in (0, 1, 2, 4):
        assert problem["items"][index]["result"] is None
        assert problem["items"][index]["problem"] is None

    assert (await transaction_count(engine), await entry_count(engine)) == before
    assert await card_balance(engine, n) == (20, 0)
    assert await card_balance(engine, m) == (0, 0)

    # The refusal is the key's answer: a retry replays it and still posts nothing.
    again = await post_batch(client, till, items, atomic=True, key=key)
    assert again.status_code == 422
    assert again.content == r.content
    assert again.headers[REPLAYED] == "true"
    assert (await transaction_count(engine), await entry_count(engine)) == before

    # The same items not atomic: all but the refused one post.
    loose = await post_batch(client, till, items)
    assert loose.status_code == 200, loose.text
    assert statuses(loose.json()) == [201, 201, 200, 422, 201]
    assert await transaction_count(engine) == before[0] + 3


async def test_atomic_batch_refused_by_an_in_batch_duplicate(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    n = (await issue_card(client, operator))["card_number"]
    items = [purchase(n, 1_000, "d-1"), purchase(n, 1_000, "d-1"), purchase(n, 1_000, "d-2")]
    r = await post_batch(client, till, items, atomic=True)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["code"] == "batch_refused"
    assert statuses(problem) == [424, 409, 424]
    assert problem["items"][1]["problem"]["code"] == "duplicate_reference"
    assert await transaction_count(engine) == 0
    assert await card_balance(engine, n) == (0, 0)


# Idempotency ---------------------------------------------------------------------------------


async def test_same_key_and_body_replays_byte_identically(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    n = (await issue_card(client, operator))["card_number"]
    items = [purchase(n, 1_000, "i-1"), redemption(n, 50, "i-2"), redemption(n, 4, "i-3")]
    key = idem()
    first = await post_batch(client, till, items, key=key)
    assert first.status_code == 200, first.text
    assert REPLAYED not in first.headers
    assert statuses(first.json()) == [201, 422, 201]
    after_first = (await transaction_count(engine), await entry_count(engine))
    assert after_first[0] == 2

    retry = await post_batch(client, till, items, key=key)
    assert retry.status_code == 200
    assert retry.content == first.content
    assert retry.headers[REPLAYED] == "true"
    assert retry.headers["content-type"] == first.headers["content-type"]

    # Key order and whitespace do not make another request.
    reordered = json.dumps(
        {"atomic": False, "items": [dict(reversed(list(i.items()))) for i in items]}, indent=2
    )
    retry2 = await client.post(
        BATCHES,
        content=reordered,
        headers={**till, **key, "Content-Type": "application/json"},
    )
    assert retry2.status_code == 200
    assert retry2.content == first.content
    assert retry2.headers[REPLAYED] == "true"
    assert (await transaction_count(engine), await entry_count(engine)) == after_first
    assert await card_balance(engine, n) == (6, 50)


async def test_same_key_with_another_body_is_refused(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    n = (await issue_card(client, operator))["card_number"]
    key = idem()
    first = await post_batch(client, till, [purchase(n, 1_000, "k-1")], key=key)
    assert first.status_code == 200, first.text
    for other in (
        {"items": [purchase(n, 1_001, "k-1")]},
        {"items": [purchase(n, 1_000, "k-2")]},
        {"items": [purchase(n, 1_000, "k-1")], "atomic": True},
    ):
        r = await client.post(BATCHES, json=other, headers={**till, **key})
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == PROBLEM_JSON
        assert r.json()["code"] == "idempotency_key_reused"
    # A key first used on POST /v1/accruals is not a batch's key either.
    accrual_key = idem()
    single = await client.post(
        "/v1/accruals",
        json={
            "kind": "purchase",
            "card_number": n,
            "amount": 500,
            "currency": "EUR",
            "reference": "k-3",
        },
        headers={**till, **accrual_key},
    )
    assert single.status_code == 201, single.text
    r = await post_batch(client, till, [purchase(n, 500, "k-3")], key=accrual_key)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "idempotency_key_reused"
    assert await transaction_count(engine) == 2
    assert await references_in_db(engine) == ["k-1", "k-3"]


async def test_batch_needs_an_idempotency_key(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    n = (await issue_card(client, operator))["card_number"]
    r = await client.post(BATCHES, json={"items": [purchase(n, 1_000, "nk")]}, headers=till)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "idempotency_key_required"
    assert await transaction_count(engine) == 0


# Limits and validation -------------------------------------------------------------------------


async def test_a_thousand_items_are_accepted(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    cards = [(await issue_card(client, operator))["card_number"] for _ in range(4)]
    items = [purchase(cards[i % 4], 100, f"bulk-{i:04d}") for i in range(1000)]
    body = json.dumps({"items": items}).encode()
    assert 64 * 1024 < len(body) < MIB  # over the default body limit, under the batch one
    r = await client.post(
        BATCHES, content=body, headers={**till, **idem(), "Content-Type": "application/json"}
    )
    assert r.status_code == 200, r.text[:2000]
    answer = r.json()
    assert (answer["posted"], answer["refused"]) == (1000, 0)
    assert set(statuses(answer)) == {201}
    assert answer["items"][-1]["index"] == 999
    assert await transaction_count(engine) == 1000
    assert await entry_count(engine) == 4000
    for card in cards:
        assert await card_balance(engine, card) == (250, 1250)
    # Each card's last item reports the card's final balance.
    assert balances(answer)[996:] == [(250, 1250)] * 4


def _validation_problem(r: Response) -> list[str]:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM_JSON
    problem = r.json()
    assert problem["code"] == "validation_error"
    return [e["pointer"] for e in problem["errors"]]


async def test_more_than_a_thousand_or_no_items_are_refused(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    n = (await issue_card(client, operator))["card_number"]
    too_many = [purchase(n, 100, f"over-{i}") for i in range(1001)]
    r = await post_batch(client, till, too_many)
    assert _validation_problem(r) == ["/items"]
    r = await post_batch(client, till, [])
    assert _validation_problem(r) == ["/items"]
    r = await client.post(BATCHES, json={}, headers={**till, **idem()})
    assert _validation_problem(r) == ["/items"]
    assert await transaction_count(engine) == 0


@pytest.mark.parametrize(
    ("mutate", "pointers"),
    [
        pytest.param(lambda items: items[3].update(colour="red"), ["/items/3/colour"], id="extra"),
        pytest.param(
            lambda items: items[0].update(amount="1000"), ["/items/0/amount"], id="amount-str"
        ),
        pytest.param(
            lambda items: items[0].update(amount=10.5), ["/items/0/amount"], id="amount-float"
        ),
        pytest.param(lambda items: items[0].update(type="refund"), ["/items/0/type"], id="tag"),
        pytest.param(lambda items: items[1].pop("type"), ["/items/1/type"], id="no-tag"),
        pytest.param(lambda items: items[1].update(asset="miles"), ["/items/1/asset"], id="asset"),
        pytest.param(lambda items: items[2].update(points=0), ["/items/2/points"], id="points"),
        pytest.param(lambda items: items[2].pop("reason"), ["/items/2/reason"], id="reason"),
        pytest.param(
            lambda items: items[0].update(card_number="70001234"),
            ["/items/0/card_number"],
            id="luhn",
        ),
        pytest.param(
            lambda items: items[1].update(colour=1), ["/items/1/colour"], id="extra-redemption"
        ),
        pytest.param(
            lambda items: items.__setitem__(4, "purchase"), ["/items/4"], id="not-an-object"
        ),
    ],
)
async def test_item_validation_pointers(
    client: AsyncClient,
    operator: dict[str, str],
    engine: AsyncEngine,
    mutate: Any,
    pointers: list[str],
) -> None:
    partner = await create_partner(client, operator)
    n = (await funded_card(client, operator, 10))["card_number"]
    items = [
        purchase(n, 1_000, "v-0", partner_id=partner["id"]),
        redemption(n, 1, "v-1"),
        award(n, 5, "v-2"),
        purchase(n, 1_000, "v-3", partner_id=partner["id"]),
        purchase(n, 1_000, "v-4", partner_id=partner["id"]),
    ]
    mutate(items)
    before = await transaction_count(engine)
    key = idem()
    r = await post_batch(client, operator, items, key=key)
    assert _validation_problem(r) == pointers
    assert await transaction_count(engine) == before
    # A refused body does not use up its key.
    ok = await post_batch(client, operator, [award(n, 1)], key=key)
    assert ok.status_code == 200, ok.text
    assert REPLAYED not in ok.headers


async def test_unknown_field_named_like_the_item_type_is_pointed_at(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Pydantic puts the union variant ("purchase") in the error location; the pointer must
    still be the client's own path to the unknown field, whatever that field is called."""
    _, till = await partner_with_key(app, client, operator)
    n = (await issue_card(client, operator))["card_number"]
    for field in ("colour", "purchase"):
        items = [purchase(n, 1_000, "tag-0"), purchase(n, 1_000, "tag-1", **{field: 1})]
        r = await post_batch(client, till, items)
        assert _validation_problem(r) == [f"/items/1/{field}"], field
    assert await transaction_count(engine) == 0


async def test_atomic_must_be_a_boolean(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    n = (await issue_card(client, operator))["card_number"]
    r = await client.post(
        BATCHES,
        json={"items": [award(n, 1)], "atomic": "yes"},
        headers={**operator, **idem()},
    )
    assert _validation_problem(r) == ["/atomic"]
    r = await client.post(
        BATCHES,
        json={"items": [award(n, 1)], "colour": "red"},
        headers={**operator, **idem()},
    )
    assert _validation_problem(r) == ["/colour"]
    assert await transaction_count(engine) == 0


def _padded(body: dict[str, Any], size: int) -> bytes:
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


async def test_body_limit_is_one_mebibyte(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    n = (await issue_card(client, operator))["card_number"]
    body = {"items": [purchase(n, 1_000, "big")]}
    headers = {**till, "Content-Type": "application/json"}

    key = idem()
    r = await client.post(BATCHES, content=_padded(body, MIB + 1), headers={**headers, **key})
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == PROBLEM_JSON
    assert r.json()["code"] == "payload_too_large"
    assert await transaction_count(engine) == 0

    # Streamed without a Content-Length: counted as it arrives.
    async def chunks() -> AsyncIterator[bytes]:
        data = _padded(body, MIB + 1)
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]

    r = await client.post(BATCHES, content=chunks(), headers={**headers, **idem()})
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "payload_too_large"
    assert await transaction_count(engine) == 0

    # Exactly the limit is accepted, and the refused request did not use up its key.
    r = await client.post(BATCHES, content=_padded(body, MIB), headers={**headers, **key})
    assert r.status_code == 200, r.text
    assert REPLAYED not in r.headers
    assert statuses(r.json()) == [201]
    assert await transaction_count(engine) == 1


# Roles -------------------------------------------------------------------------------------------


async def test_partner_key_cannot_award_in_a_batch(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    n = (await issue_card(client, operator))["card_number"]
    items = [purchase(n, 1_000, "t-1"), award(n, 1_000, "t-2"), redemption(n, 10, "t-3")]
    r = await post_batch(client, till, items)
    assert r.status_code == 200, r.text
    body = r.json()
    assert statuses(body) == [201, 403, 201]
    assert codes(body) == [None, "forbidden", None]
    assert (body["posted"], body["refused"]) == (2, 1)
    assert balances(body)[2] == (0, 50)
    assert await card_balance(engine, n) == (0, 50)
    assert int(await scalar(engine, "SELECT count(*) FROM transactions WHERE type = 'award'")) == 0
    single = await post_single(client, till, items[1])
    assert single.status_code == 403
    assert single.json() == body["items"][1]["problem"]


async def test_unauthenticated_batch_is_refused(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    n = (await issue_card(client, operator))["card_number"]
    for headers in ({}, {"Authorization": "Bearer nope"}):
        r = await client.post(BATCHES, json={"items": [award(n, 5)]}, headers={**headers, **idem()})
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "unauthorized"
    assert await transaction_count(engine) == 0


# The books ---------------------------------------------------------------------------------------


async def test_books_balance_after_a_mixed_batch(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    shop = await create_partner(client, operator)
    cafe = await create_partner(
        client, operator, earn_rate={"points": 3, "per_amount": 1_000}, cashback_bps=250
    )
    cards = [(await issue_card(client, operator))["card_number"] for _ in range(3)]
    a, b, c = cards
    # A till that was offline three days ago, on a clock one hour ahead of UTC.
    offline_at = (
        (datetime.now(UTC) - timedelta(days=3))
        .replace(microsecond=0)
        .astimezone(timezone(timedelta(hours=1)))
    )
    items = [
        award(a, 100, "m-0"),
        purchase(b, 12_345, "m-1", partner_id=shop["id"]),
        purchase(c, 9_999, "m-2", partner_id=cafe["id"], occurred_at=offline_at.isoformat()),
        redemption(a, 30, "m-3", partner_id=shop["id"]),
        redemption(b, 100, "m-4", asset="cashback"),
        redemption(b, 123, "m-5"),
        purchase(a, 50, "m-6", partner_id=cafe["id"]),
        redemption(c, 29, "m-7", partner_id=cafe["id"]),
        redemption(c, 1, "m-8", partner_id=cafe["id"]),  # refused: nothing left
        award(b, 1, "m-9"),
        redemption(b, 517, "m-10", asset="cashback", partner_id=cafe["id"]),
    ]
    r = await post_batch(client, operator, items)
    assert r.status_code == 200, r.text
    body = r.json()
    assert statuses(body) == [201, 201, 201, 201, 201, 201, 201, 201, 422, 201, 201]
    # Earn: shop 1 pt / 1.00, 5 %; cafe 3 pts / 10.00, 2.5 %.
    # a: +100, -30, +0 pts & +1 cent (50 * 2.5 % = 1.25)  -> (70, 1)
    # b: +123 pts & +617 cents, -100 cents, -123 pts, +1, -517 cents -> (1, 0)
    # c: +29 pts & +249 cents, -29 pts -> (0, 249)
    assert balances(body) == [
        (100, 0),
        (123, 617),
        (29, 249),
        (70, 0),
        (123, 517),
        (0, 517),
        (70, 1),
        (0, 249),
        None,
        (1, 517),
        (1, 0),
    ]
    assert [await card_balance(engine, card) for card in cards] == [(70, 1), (1, 0), (0, 249)]

    unbalanced = await rows(
        engine,
        "SELECT transaction_id, asset, sum(amount) FROM entries "
        "GROUP BY transaction_id, asset HAVING sum(amount) <> 0",
    )
    assert unbalanced == []
    thin = await rows(
        engine,
        "SELECT t.id FROM transactions t LEFT JOIN entries e ON e.transaction_id = t.id "
        "GROUP BY t.id HAVING count(e.id) < 2",
    )
    assert thin == []
    drift = await rows(
        engine,
        """
        SELECT a.id, a.balance, coalesce(sum(e.amount), 0) AS total
        FROM accounts a LEFT JOIN entries e ON e.account_id = a.id
        WHERE a.kind = 'card' GROUP BY a.id
        HAVING a.balance IS DISTINCT FROM coalesce(sum(e.amount), 0)
        """,
    )
    assert drift == []
    totals = await rows(engine, "SELECT asset, sum(amount) AS s FROM entries GROUP BY asset")
    assert {r.asset: int(r.s) for r in totals} == {"points": 0, "cashback": 0}

    # Each answer's transaction is in the books as it says.
    posted = [(i, item) for i, item in enumerate(body["items"]) if item["status"] == 201]
    assert await transaction_count(engine) == len(posted) == 10
    for index, item in posted:
        tx = item["result"]["transaction_id"]
        row = (
            await rows(
                engine,
                "SELECT t.type, t.reference, t.partner_id, t.purchase_amount, t.currency, "
                "t.occurred_at, c.card_number FROM transactions t JOIN cards c ON c.id = t.card_id "
                "WHERE t.id = :id",
                id=uuid.UUID(tx),
            )
        )[0]
        sent = items[index]
        assert row.reference == sent["reference"]
        assert row.card_number == sent["card_number"]
        assert (str(row.partner_id) if row.partner_id else None) == sent.get("partner_id")
        expected_type = {"purchase": "accrual", "award": "award", "redemption": "redemption"}
        assert row.type == expected_type[sent["type"]]
        if sent["type"] == "purchase":
            assert (row.purchase_amount, row.currency) == (sent["amount"], "EUR")
        card_legs = await rows(
            engine,
            "SELECT e.asset, e.amount FROM entries e JOIN accounts a ON a.id = e.account_id "
            "WHERE e.transaction_id = :id AND a.kind = 'card' ORDER BY e.asset",
            id=uuid.UUID(tx),
        )
        if sent["type"] == "redemption":
            assert [(r.asset, int(r.amount)) for r in card_legs] == [
                (sent["asset"], -sent["amount"])
            ]
        else:
            earned = item["result"]["earned"]
            expected = [(k, v) for k, v in sorted(earned.items()) if v]
            assert [(r.asset, int(r.amount)) for r in card_legs] == expected
    offline = body["items"][2]["result"]
    assert datetime.fromisoformat(offline["occurred_at"]) == offline_at
    stored = await scalar(
        engine,
        "SELECT occurred_at FROM transactions WHERE id = :id",
        id=uuid.UUID(offline["transaction_id"]),
    )
    assert stored == offline_at
    # The others happened when they were posted.
    assert body["items"][1]["result"]["occurred_at"] == body["items"][1]["result"]["posted_at"]


# Concurrency -------------------------------------------------------------------------------------


_WAITING = text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


@asynccontextmanager
async def card_locked(engine: AsyncEngine, card_number: str) -> AsyncIterator[None]:
    """Hold the card's account rows locked in another transaction until the block ends."""
    async with engine.connect() as holder:
        await holder.begin()
        locked = await holder.execute(
            text(
                "SELECT a.id FROM accounts a JOIN cards c ON c.id = a.card_id "
                "WHERE c.card_number = :n FOR UPDATE OF a"
            ),
            {"n": card_number},
        )
        assert len(locked.all()) == 2
        yield
        await holder.rollback()


async def wait_for_waiters(engine: AsyncEngine, count: int) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        async with engine.connect() as conn:
            waiting = int((await conn.execute(_WAITING)).scalar_one())
        if waiting >= count:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{waiting} waiting, not {count}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("forced_overlap", [False, True])
async def test_concurrent_batches_never_overdraw_a_card(
    app: FastAPI,
    client: AsyncClient,
    operator: dict[str, str],
    engine: AsyncEngine,
    forced_overlap: bool,
) -> None:
    _, till = await partner_with_key(app, client, operator)
    n = (await funded_card(client, operator, 100))["card_number"]
    batch_a = [redemption(n, 10, f"A-{i}") for i in range(6)]
    batch_b = [redemption(n, 10, f"B-{i}") for i in range(6)]

    if forced_overlap:
        # Both batches are in flight, waiting for the card, before either may take it.
        async with card_locked(engine, n):
            tasks = [
                asyncio.create_task(post_batch(client, till, batch_a)),
                asyncio.create_task(post_batch(client, till, batch_b)),
            ]
            await wait_for_waiters(engine, 2)
        responses = await asyncio.gather(*tasks)
    else:
        responses = await asyncio.gather(
            post_batch(client, till, batch_a), post_batch(client, till, batch_b)
        )

    for r in responses:
        assert r.status_code == 200, r.text
    items = [item for r in responses for item in r.json()["items"]]
    redeemed = [item for item in items if item["status"] == 201]
    refused = [item for item in items if item["status"] != 201]
    assert sum(item["result"]["amount"] for item in redeemed) == 100
    assert len(redeemed) == 10
    assert [item["problem"]["code"] for item in refused] == ["insufficient_balance"] * 2
    # Every answer saw the balance left by the one before it: no two saw the same.
    assert sorted(item["result"]["balance"]["points"] for item in redeemed) == list(
        range(0, 100, 10)
    )
    assert await card_balance(engine, n) == (0, 0)
    assert (
        int(await scalar(engine, "SELECT count(*) FROM transactions WHERE type = 'redemption'"))
        == 10
    )
    total = await scalar(
        engine,
        "SELECT coalesce(sum(e.amount), 0) FROM entries e JOIN accounts a ON a.id = e.account_id "
        "JOIN cards c ON c.id = a.card_id WHERE c.card_number = :n AND a.asset = 'points'",
        n=n,
    )
    assert int(total) == 0


async def test_concurrent_batches_with_the_same_reference_post_it_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Both batches check the reference before either has written it; the loser must not
    post it twice, and must answer something a till can act on: 200 with the item's 409, or
    503 retry_later (nothing written), after which a retry with the same key gets the 409."""
    _, till = await partner_with_key(app, client, operator)
    n = (await issue_card(client, operator))["card_number"]
    batch_a = [purchase(n, 1_000, "SAME"), purchase(n, 1_000, "ONLY-A")]
    batch_b = [purchase(n, 1_000, "SAME"), purchase(n, 1_000, "ONLY-B")]
    key_a, key_b = idem(), idem()
    async with card_locked(engine, n):
        tasks = [
            asyncio.create_task(post_batch(client, till, batch_a, key=key_a)),
            asyncio.create_task(post_batch(client, till, batch_b, key=key_b)),
        ]
        await wait_for_waiters(engine, 2)
    first, second = await asyncio.gather(*tasks)
    by_status = sorted([first, second], key=lambda r: r.status_code)
    winner, loser = by_status
    assert winner.status_code == 200, winner.text
    assert statuses(winner.json()) == [201, 201]
    assert loser.status_code in (200, 503), loser.text
    if loser.status_code == 503:
        assert loser.json()["code"] == "retry_later"
        assert loser.headers["Retry-After"] == "1"
        assert await transaction_count(engine) == 2
        loser_items, loser_key = (batch_b, key_b) if loser is second else (batch_a, key_a)
        loser = await post_batch(client, till, loser_items, key=loser_key)
        assert loser.status_code == 200, loser.text
    assert statuses(loser.json()) == [409, 201]
    assert (
        loser.json()["items"][0]["problem"]["transaction_id"]
        == winner.json()["items"][0]["result"]["transaction_id"]
    )
    assert await transaction_count(engine) == 3
    same = "SELECT count(*) FROM transactions WHERE reference = 'SAME'"
    assert int(await scalar(engine, same)) == 1
    assert await card_balance(engine, n) == (30, 150)


async def test_concurrent_retries_of_one_batch_post_it_once(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    n = (await issue_card(client, operator))["card_number"]
    items = [purchase(n, 1_000, "once-1"), purchase(n, 2_000, "once-2")]
    key = idem()
    async with card_locked(engine, n):
        tasks = [
            asyncio.create_task(post_batch(client, till, items, key=key)),
            asyncio.create_task(post_batch(client, till, items, key=key)),
        ]
        # One waits for the card, the other for the first one's claim of the key.
        await wait_for_waiters(engine, 2)
    responses = await asyncio.gather(*tasks)
    assert [r.status_code for r in responses] == [200, 200]
    assert responses[0].content == responses[1].content
    assert sorted(r.headers.get(REPLAYED, "") for r in responses) == ["", "true"]
    assert await transaction_count(engine) == 2
    assert await card_balance(engine, n) == (30, 150)

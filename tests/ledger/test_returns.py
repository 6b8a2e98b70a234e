"""POST /v1/accruals/{id}/refunds: goods of a purchase come back, and what the purchase earned is
taken back in proportion, from what it earned at the time; and the clawback debt a card runs
into when it had already spent that.

The rounding rule (app/ledger/returns.py): once returns totalling R of a purchase P have been
posted, exactly floor(earned * R / P) of each asset has been taken back. `ledger_ok` checks that
rule with SQL over every accrual with returns, on top of the double-entry invariants, allowing
the negative balances that only a clawback may leave. (tests/ledger/helpers_ledger.py's
check_books refuses any negative balance and any transfer leg, so it fits none of this.)

The helpers here are shared by the other tests of returns, holds and card life with debt.
"""

import random
import uuid
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.ledger.returns import taken_back
from tests.conftest import idem
from tests.factories.cards import funded_card, issue_card
from tests.factories.partners import partner_with_key
from tests.factories.postings import purchase, redeem

PROBLEM_JSON = "application/problem+json"

# Helpers (shared) ----------------------------------------------------------------------------


def assert_problem(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status, body
    return body


async def buy(client: AsyncClient, till: dict[str, str], card: str, amount: int) -> str:
    """A purchase at the till's partner; the accrual's transaction id."""
    r = await purchase(client, till, card, amount, f"rcpt-{uuid.uuid4()}")
    assert r.status_code == 201, r.text
    return str(r.json()["transaction_id"])


def give_back(
    client: AsyncClient,
    headers: dict[str, str],
    accrual: str,
    amount: int,
    key: dict[str, str] | None = None,
    **extra: Any,
) -> Any:
    """A return of goods worth `amount` (un-awaited, so tests can gather many)."""
    return client.post(
        f"/v1/accruals/{accrual}/refunds",
        json={"amount": amount, **extra},
        headers={**headers, **(key or idem())},
    )


async def returned_ok(
    client: AsyncClient, headers: dict[str, str], accrual: str, amount: int, **extra: Any
) -> dict[str, Any]:
    r = await give_back(client, headers, accrual, amount, **extra)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def balance(client: AsyncClient, headers: dict[str, str], card: str) -> dict[str, Any]:
    """GET /v1/cards/{n}/balance, the whole answer."""
    r = await client.get(f"/v1/cards/{card}/balance", headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def available(client: AsyncClient, headers: dict[str, str], card: str) -> dict[str, int]:
    body = await balance(client, headers, card)
    return {"points": body["points"], "cashback": body["cashback"]}


async def hold(
    client: AsyncClient,
    headers: dict[str, str],
    card: str,
    amount: int,
    asset: str = "points",
    reference: str | None = None,
) -> Response:
    body = {
        "card_number": card,
        "asset": asset,
        "amount": amount,
        "reference": reference or f"order-{uuid.uuid4()}",
    }
    return await client.post("/v1/holds", json=body, headers={**headers, **idem()})


def transfer(
    client: AsyncClient, operator: dict[str, str], source: str, target: str, amount: int
) -> Any:
    body = {
        "from_card_number": source,
        "to_card_number": target,
        "asset": "points",
        "amount": amount,
        "reason": "goodwill gift",
    }
    return client.post("/v1/transfers", json=body, headers={**operator, **idem()})


def reverse(client: AsyncClient, headers: dict[str, str], tx: str) -> Any:
    return client.post(
        f"/v1/transactions/{tx}/reversal", json={"reason": "wrong"}, headers={**headers, **idem()}
    )


_CHECKS = {
    "unbalanced transactions": """
        SELECT transaction_id, asset, sum(amount) FROM entries
        GROUP BY transaction_id, asset HAVING sum(amount) <> 0
    """,
    "ledger totals not zero": """
        SELECT asset, sum(amount) FROM entries GROUP BY asset HAVING sum(amount) <> 0
    """,
    "transactions with fewer than two entries": """
        SELECT t.id FROM transactions t LEFT JOIN entries e ON e.transaction_id = t.id
        GROUP BY t.id HAVING count(e.id) < 2
    """,
    "card balances that are not the sum of their entries": """
        SELECT a.id, a.balance, coalesce(sum(e.amount), 0) FROM accounts a
        LEFT JOIN entries e ON e.account_id = a.id WHERE a.kind = 'card'
        GROUP BY a.id HAVING a.balance <> coalesce(sum(e.amount), 0)
    """,
    "card held amounts that are not the sum of their open holds": """
        SELECT a.id, a.held, coalesce(sum(h.amount), 0) FROM accounts a
        LEFT JOIN holds h ON h.account_id = a.id AND h.status = 'open'
        WHERE a.kind = 'card'
        GROUP BY a.id HAVING a.held <> coalesce(sum(h.amount), 0)
    """,
    "open holds on another card than their account's": """
        SELECT h.id FROM holds h JOIN accounts a ON a.id = h.account_id
        WHERE a.card_id <> h.card_id OR a.asset <> h.asset
    """,
    "open holds on closed cards": """
        SELECT h.id FROM holds h JOIN cards c ON c.id = h.card_id
        WHERE h.status = 'open' AND c.status = 'closed'
    """,
    "negative balances that no clawback explains": """
        SELECT a.id, a.balance FROM accounts a WHERE a.kind = 'card' AND a.balance < 0
        AND NOT EXISTS (
            SELECT 1 FROM entries e JOIN transactions t ON t.id = e.transaction_id
            WHERE e.account_id = a.id AND e.amount < 0
              AND t.type IN ('refund', 'reversal', 'transfer'))
    """,
    "card legs on a card the transaction is not about": """
        SELECT e.id FROM entries e JOIN accounts a ON a.id = e.account_id
        JOIN transactions t ON t.id = e.transaction_id
        WHERE a.kind = 'card' AND a.card_id IS DISTINCT FROM t.card_id
          AND a.card_id IS DISTINCT FROM t.counterparty_card_id
    """,
    # After returns totalling R of a purchase P: R <= P, and each funding leg of the accrual
    # (a card credit and the entry that funded it: the partner's rule, the tier bonus, a
    # campaign) was taken back by exactly floor(leg * R / P). So per asset the card gave back
    # the sum over its legs of floor(leg * R / P), and each funder account got back the sum over
    # the legs it funded (funder 0 below: the card's side). The legs are read from the
    # accrual's own entries, one entry per leg on each side.
    "returns that broke the rounding rule": """
        WITH returned AS (
            SELECT accrual_id, sum(amount) AS returned FROM purchase_returns GROUP BY accrual_id
        ), due AS (
            SELECT t.id, e.asset,
                   CASE WHEN a.kind IN ('card', 'operator_pending') THEN 0
                        ELSE e.account_id END AS funder,
                   t.purchase_amount AS purchase, r.returned,
                   sum(floor(abs(e.amount)::numeric * r.returned / t.purchase_amount)) AS due
            FROM transactions t JOIN returned r ON r.accrual_id = t.id
            JOIN entries e ON e.transaction_id = t.id
            JOIN accounts a ON a.id = e.account_id
            WHERE t.type = 'accrual'
            GROUP BY t.id, e.asset, 3, t.purchase_amount, r.returned
        ), taken AS (
            SELECT t.corrects_id AS id, e.asset,
                   CASE WHEN a.kind IN ('card', 'operator_pending') THEN 0
                        ELSE e.account_id END AS funder,
                   sum(CASE WHEN a.kind IN ('card', 'operator_pending') THEN -e.amount
                            ELSE e.amount END) AS taken
            FROM transactions t JOIN entries e ON e.transaction_id = t.id
            JOIN accounts a ON a.id = e.account_id
            WHERE t.type = 'refund' AND t.corrects_id IN (SELECT accrual_id FROM returned)
            GROUP BY t.corrects_id, e.asset, 3
        )
        SELECT coalesce(d.id, tk.id), coalesce(d.asset, tk.asset),
               coalesce(d.funder, tk.funder), d.purchase, d.returned, d.due, tk.taken
        FROM due d
        FULL JOIN taken tk
          ON tk.id = d.id AND tk.asset = d.asset AND tk.funder = d.funder
        WHERE d.returned > d.purchase OR coalesce(tk.taken, 0) <> coalesce(d.due, 0)
    """,
    "returns not linked one to one with their refund transactions": """
        SELECT pr.id FROM purchase_returns pr LEFT JOIN transactions t ON t.id = pr.transaction_id
        WHERE pr.transaction_id IS NOT NULL
          AND (t.type IS DISTINCT FROM 'refund' OR t.corrects_id <> pr.accrual_id)
        UNION ALL
        SELECT t.id FROM transactions t JOIN transactions o ON o.id = t.corrects_id
        WHERE t.type = 'refund' AND o.type = 'accrual'
          AND (SELECT count(*) FROM purchase_returns pr WHERE pr.transaction_id = t.id) <> 1
    """,
    "redemptions or captures refunded beyond what they spent": """
        SELECT o.id FROM transactions o
        JOIN entries oe ON oe.transaction_id = o.id
        JOIN accounts oa ON oa.id = oe.account_id
         AND oa.kind IN ('partner_redeemed', 'operator_redeemed')
        WHERE o.type IN ('redemption', 'capture')
        GROUP BY o.id
        HAVING sum(oe.amount) < (
            SELECT coalesce(sum(e.amount), 0) FROM transactions t
            JOIN entries e ON e.transaction_id = t.id
            JOIN accounts a ON a.id = e.account_id AND a.kind = 'card'
            WHERE t.corrects_id = o.id AND t.type = 'refund')
    """,
}


async def ledger_ok(client: AsyncClient, operator: dict[str, str], engine: AsyncEngine) -> None:
    """GET /v1/audit is ok, and the books hold with SQL (clawback debt allowed)."""
    r = await client.get("/v1/audit", headers=operator)
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True, r.json()
    async with engine.connect() as conn:
        for name, sql in _CHECKS.items():
            rows = [tuple(row) for row in await conn.execute(text(sql))]
            assert rows == [], f"{name}: {rows}"


_SNAPSHOT = text("""
    SELECT (SELECT count(*) FROM transactions), (SELECT count(*) FROM entries),
           (SELECT count(*) FROM purchase_returns), (SELECT count(*) FROM holds),
           (SELECT array_agg(id || ':' || balance || ':' || coalesce(held, 0) ORDER BY id)
              FROM accounts),
           (SELECT array_agg(id || ':' || status ORDER BY id) FROM cards)
""")


async def snapshot(engine: AsyncEngine) -> tuple[Any, ...]:
    """What a refused request must leave as it was."""
    async with engine.connect() as conn:
        return tuple((await conn.execute(_SNAPSHOT)).one())


def expected_take(earned: int, purchase_amount: int, before: int, returning: int) -> int:
    """The rounding rule, restated independently of the app."""
    return (earned * (before + returning)) // purchase_amount - (earned * before) // purchase_amount


# Rounding ------------------------------------------------------------------------------------


async def test_a_full_return_takes_back_exactly_what_was_earned(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = await buy(client, till, card, 10_000)  # 100 points, 500 cashback
    assert await available(client, till, card) == {"points": 100, "cashback": 500}

    r = await give_back(client, till, accrual, 10_000, reference="RET-1", reason="all of it")

    assert r.status_code == 201, r.text
    body = r.json()
    assert body == {
        "return_id": body["return_id"],
        "transaction_id": body["transaction_id"],
        "corrects_id": accrual,
        "card_number": card,
        "amount": 10_000,
        "returned_total": 10_000,
        "returnable": 0,
        "taken_back": {"points": 100, "cashback": 500},
        "balance": {"points": 0, "cashback": 0},
        "debt": {"points": 0, "cashback": 0},
        "posted_at": body["posted_at"],
    }
    assert body["transaction_id"] is not None
    assert await available(client, till, card) == {"points": 0, "cashback": 0}

    tx = (await client.get(f"/v1/transactions/{body['transaction_id']}", headers=till)).json()
    assert (tx["type"], tx["corrects_id"], tx["reference"], tx["description"]) == (
        "refund",
        accrual,
        "RET-1",
        "all of it",
    )
    assert (tx["purchase_amount"], tx["currency"], tx["partner_id"]) == (
        10_000,
        "EUR",
        partner["id"],
    )
    assert sorted((e["account_kind"], e["asset"], e["amount"]) for e in tx["entries"]) == sorted(
        [
            ("card", "points", -100),
            ("partner_issued", "points", 100),
            ("card", "cashback", -500),
            ("partner_issued", "cashback", 500),
        ]
    )
    history = (await client.get(f"/v1/cards/{card}/transactions", headers=till)).json()["items"]
    assert [(i["type"], i["points"], i["cashback"]) for i in history] == [
        ("refund", -100, -500),
        ("accrual", 100, 500),
    ]
    # Everything came back: nothing more can.
    problem = assert_problem(
        await give_back(client, till, accrual, 1), 422, "refund_exceeds_original"
    )
    assert (problem["purchase_amount"], problem["returned"], problem["returnable"]) == (
        10_000,
        10_000,
        0,
    )
    await ledger_ok(client, operator, engine)


async def test_three_thirds_take_back_exactly_what_was_earned(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = await buy(client, till, card, 10_000)

    steps = []
    for amount in (3_333, 3_333, 3_334):
        body = await returned_ok(client, till, accrual, amount)
        steps.append(
            (
                body["taken_back"]["points"],
                body["taken_back"]["cashback"],
                body["returned_total"],
                body["returnable"],
                body["balance"]["points"],
                body["balance"]["cashback"],
            )
        )

    assert steps == [
        (33, 166, 3_333, 6_667, 67, 334),
        (33, 167, 6_666, 3_334, 34, 167),
        (34, 167, 10_000, 0, 0, 0),
    ]
    assert await available(client, till, card) == {"points": 0, "cashback": 0}
    await ledger_ok(client, operator, engine)


async def test_returns_of_one_minor_unit_add_up_to_exactly_what_was_earned(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """A purchase of 2.50 earns 2 points and 12 cents. Returned one cent at a time, most
    returns take nothing (and are still recorded, with no transaction); the points come back
    at the 125th and 250th cent, the cashback one cent at a time along the way."""
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    r = await purchase(client, till, card, 250, "small")
    assert r.json()["earned"] == {"points": 2, "cashback": 12}
    accrual = r.json()["transaction_id"]

    totals = {"points": 0, "cashback": 0}
    points_at, empty = [], 0
    for returned_before in range(250):
        body = await returned_ok(client, till, accrual, 1)
        take = body["taken_back"]
        assert take == {
            "points": expected_take(2, 250, returned_before, 1),
            "cashback": expected_take(12, 250, returned_before, 1),
        }, returned_before
        assert body["returned_total"] == returned_before + 1
        if take == {"points": 0, "cashback": 0}:
            assert body["transaction_id"] is None
            empty += 1
        else:
            assert body["transaction_id"] is not None
        if take["points"]:
            points_at.append(returned_before + 1)
        for asset in totals:
            totals[asset] += take[asset]
            assert totals[asset] <= {"points": 2, "cashback": 12}[asset]

    assert totals == {"points": 2, "cashback": 12}
    assert points_at == [125, 250]
    assert empty == 250 - 12  # the two points come back together with a cent of cashback
    assert await available(client, till, card) == {"points": 0, "cashback": 0}
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT count(*), count(transaction_id), sum(amount) FROM purchase_returns"
                    " WHERE accrual_id = :a"
                ),
                {"a": accrual},
            )
        ).one()
    assert tuple(rows) == (250, 12, 250)
    assert_problem(await give_back(client, till, accrual, 1), 422, "refund_exceeds_original")
    await ledger_ok(client, operator, engine)


async def test_random_splits_never_take_back_more_than_was_earned(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Property: for random purchases at partners with odd rates, split into random returns
    (interleaved across the purchases of one card), every prefix takes back
    floor(earned * R / P) <= earned, and the full return exactly what was earned."""
    rng = random.Random(20261123)
    tills = [
        (await partner_with_key(app, client, operator, earn_rate=rate, cashback_bps=bps))[1]
        for rate, bps in (
            ({"points": 1, "per_amount": 100}, 500),
            ({"points": 7, "per_amount": 333}, 137),
            ({"points": 3, "per_amount": 7}, 9_999),
        )
    ]
    card = (await issue_card(client, operator))["card_number"]
    purchases: list[dict[str, Any]] = []
    for i in range(6):
        till = tills[i % len(tills)]
        amount = rng.randint(1, 50_000)
        r = await purchase(client, till, card, amount, f"p-{i}")
        if r.status_code == 200:  # earned nothing: nothing to return
            continue
        assert r.status_code == 201, r.text
        cuts = sorted(rng.sample(range(1, amount), min(rng.randint(0, 5), amount - 1)))
        parts = [b - a for a, b in zip([0, *cuts], [*cuts, amount], strict=True)]
        purchases.append(
            {
                "id": r.json()["transaction_id"],
                "till": till,
                "amount": amount,
                "earned": r.json()["earned"],
                "parts": parts,
                "returned": 0,
                "taken": {"points": 0, "cashback": 0},
            }
        )
    assert len(purchases) >= 4

    # Any order of a purchase's parts is a split of it: shuffle them all together.
    pending = [(p, part) for p in purchases for part in p["parts"]]
    rng.shuffle(pending)
    for p, part in pending:
        body = await returned_ok(client, p["till"], p["id"], part)
        p["returned"] += part
        assert body["returned_total"] == p["returned"]
        assert body["returnable"] == p["amount"] - p["returned"]
        for asset in ("points", "cashback"):
            p["taken"][asset] += body["taken_back"][asset]
            earned = p["earned"][asset]
            assert p["taken"][asset] == earned * p["returned"] // p["amount"], (p, asset)
            assert 0 <= p["taken"][asset] <= earned

    for p in purchases:
        assert p["returned"] == p["amount"]
        assert p["taken"] == p["earned"], p
    assert await available(client, operator, card) == {"points": 0, "cashback": 0}
    await ledger_ok(client, operator, engine)


def test_the_rounding_rule_holds_for_many_random_splits() -> None:
    """The same property on app/ledger/returns.py's taken_back alone, over many more splits
    than the API could post quickly, including earnings larger than the purchase."""
    rng = random.Random(42)
    for _ in range(2_000):
        purchase_amount = rng.randint(1, 10**9)
        earned = rng.choice([0, 1, 2, rng.randint(1, 1_000), rng.randint(1, 10**12)])
        returned, taken = 0, 0
        while returned < purchase_amount:
            part = rng.randint(1, max(1, (purchase_amount - returned) // rng.choice([1, 2, 7])))
            part = min(part, purchase_amount - returned)
            take = taken_back(earned, purchase_amount, returned, part)
            assert take >= 0
            returned += part
            taken += take
            assert taken == earned * returned // purchase_amount <= earned
        assert taken == earned


async def test_a_return_takes_back_what_was_earned_then_not_todays_rates(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """There is no API to change a partner's rates: they are changed in the database, as a
    migration or a back-office tool would."""
    partner, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = await buy(client, till, card, 10_000)  # 100 points, 500 cashback at 1/100, 5 %

    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE partners SET earn_points = 10, earn_per_amount = 100, cashback_bps = 0"
                " WHERE id = :id"
            ),
            {"id": partner["id"]},
        )
    # The new rates are in force: a new purchase earns by them.
    r = await purchase(client, till, card, 1_000, "after-the-change")
    assert r.json()["earned"] == {"points": 100, "cashback": 0}

    body = await returned_ok(client, till, accrual, 5_000)
    assert body["taken_back"] == {"points": 50, "cashback": 250}
    body = await returned_ok(client, till, accrual, 5_000)
    assert body["taken_back"] == {"points": 50, "cashback": 250}
    assert await available(client, till, card) == {"points": 100, "cashback": 0}
    await ledger_ok(client, operator, engine)


# Refusals ------------------------------------------------------------------------------------


async def test_returns_cannot_add_up_past_the_purchase(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = await buy(client, till, card, 10_000)
    await returned_ok(client, till, accrual, 6_000)

    before = await snapshot(engine)
    problem = assert_problem(
        await give_back(client, till, accrual, 4_001), 422, "refund_exceeds_original"
    )
    assert (problem["purchase_amount"], problem["returned"], problem["returnable"]) == (
        10_000,
        6_000,
        4_000,
    )
    assert_problem(await give_back(client, till, accrual, 10**12), 422, "refund_exceeds_original")
    assert await snapshot(engine) == before

    body = await returned_ok(client, till, accrual, 4_000)
    assert (body["returned_total"], body["returnable"]) == (10_000, 0)
    await ledger_ok(client, operator, engine)


async def test_only_a_purchase_has_goods_to_return(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    award = (await client.get(f"/v1/cards/{card}/transactions", headers=operator)).json()["items"][
        0
    ]
    assert award["type"] == "award"
    spent = await redeem(client, till, card, 10, "spend-1")
    assert spent.status_code == 201, spent.text
    accrual = await buy(client, till, card, 10_000)
    refund = await returned_ok(client, till, accrual, 1_000)

    before = await snapshot(engine)
    for tx, headers in (
        (award["id"], operator),
        (spent.json()["transaction_id"], till),
        (refund["transaction_id"], till),
    ):
        assert_problem(await give_back(client, headers, tx, 1), 422, "not_a_purchase")
    assert await snapshot(engine) == before


async def test_a_reversed_purchase_has_nothing_left_to_return(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = await buy(client, till, card, 10_000)
    reversal = await reverse(client, till, accrual)
    assert reversal.status_code == 201, reversal.text

    before = await snapshot(engine)
    problem = assert_problem(await give_back(client, till, accrual, 1), 409, "already_reversed")
    assert problem["transaction_id"] == reversal.json()["transaction_id"]
    assert await snapshot(engine) == before
    assert await available(client, till, card) == {"points": 0, "cashback": 0}


async def test_a_purchase_with_returns_cannot_be_reversed(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Even a return too small to take anything back blocks the reversal: it counts."""
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = await buy(client, till, card, 10_000)
    body = await returned_ok(client, till, accrual, 1)
    assert (body["transaction_id"], body["taken_back"]) == (None, {"points": 0, "cashback": 0})

    before = await snapshot(engine)
    for headers in (till, operator):
        problem = assert_problem(await reverse(client, headers, accrual), 409, "already_refunded")
        assert problem["returned"] == 1
    assert await snapshot(engine) == before

    # The rest can still be returned, and then what was earned is back exactly.
    body = await returned_ok(client, till, accrual, 9_999)
    assert body["taken_back"] == {"points": 100, "cashback": 500}
    # A return's refund transaction is not itself reversible.
    assert_problem(await reverse(client, till, body["transaction_id"]), 422, "not_reversible")
    await ledger_ok(client, operator, engine)


async def test_unknown_and_other_partners_purchases_are_not_found(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    _, other_till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = await buy(client, till, card, 10_000)

    before = await snapshot(engine)
    assert_problem(await give_back(client, other_till, accrual, 1), 404, "transaction_not_found")
    assert_problem(
        await give_back(client, till, str(uuid.uuid4()), 1), 404, "transaction_not_found"
    )
    assert_problem(
        await give_back(client, operator, str(uuid.uuid4()), 1), 404, "transaction_not_found"
    )
    assert await snapshot(engine) == before

    # The operator may return any partner's purchase.
    body = await returned_ok(client, operator, accrual, 10_000)
    assert body["taken_back"] == {"points": 100, "cashback": 500}
    await ledger_ok(client, operator, engine)


async def test_a_return_reference_posts_once_per_purchase(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = await buy(client, till, card, 10_000)
    await returned_ok(client, till, accrual, 1_000, reference="RET-7")

    before = await snapshot(engine)
    assert_problem(
        await give_back(client, till, accrual, 1_000, reference="RET-7"), 409, "duplicate_reference"
    )
    assert await snapshot(engine) == before
    # Also when the first return with that reference took nothing back.
    small = await buy(client, till, card, 250)
    first = await returned_ok(client, till, small, 1, reference="RET-8")
    assert first["transaction_id"] is None
    assert_problem(
        await give_back(client, till, small, 200, reference="RET-8"), 409, "duplicate_reference"
    )
    await returned_ok(client, till, accrual, 1_000, reference="RET-9")
    await ledger_ok(client, operator, engine)


async def test_a_reused_return_reference_does_not_depend_on_what_the_first_took_back(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    """A return's reference on another purchase of the same partner: whatever the answer is
    meant to be, it cannot depend on whether the earlier return happened to take anything
    back (on rounding)."""
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    outcomes = []
    for first_amount in (1, 200):  # of 250: the first takes nothing back, the second does
        first, second = [await buy(client, till, card, 250) for _ in range(2)]
        reference = f"RET-{first_amount}"
        await returned_ok(client, till, first, first_amount, reference=reference)
        r = await give_back(client, till, second, 200, reference=reference)
        outcomes.append((r.status_code, r.json().get("code")))
    assert outcomes[0] == outcomes[1], outcomes


async def test_a_closed_card_takes_no_return(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = await buy(client, till, card, 10_000)
    assert (await redeem(client, till, card, 100, "spend-all")).status_code == 201
    assert (await redeem(client, till, card, 500, "spend-cb", asset="cashback")).status_code == 201
    r = await client.post(f"/v1/cards/{card}/close", headers=operator)
    assert r.status_code == 200, r.text

    before = await snapshot(engine)
    assert_problem(await give_back(client, till, accrual, 1_000), 409, "card_closed")
    assert await snapshot(engine) == before


async def test_a_retried_return_replays_its_first_answer(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = await buy(client, till, card, 10_000)
    key = idem()
    first = await give_back(client, till, accrual, 2_500, key=key)
    assert first.status_code == 201, first.text
    after_first = await snapshot(engine)

    again = await give_back(client, till, accrual, 2_500, key=key)
    assert again.status_code == 201 and again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert_problem(
        await give_back(client, till, accrual, 2_000, key=key), 422, "idempotency_key_reused"
    )
    assert await snapshot(engine) == after_first
    assert await available(client, till, card) == {"points": 75, "cashback": 375}


# Clawback debt -------------------------------------------------------------------------------


async def test_a_return_of_spent_points_leaves_a_debt_that_earnings_pay_off(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    other = (await issue_card(client, operator))["card_number"]
    accrual = await buy(client, till, card, 10_000)  # 100 points, 500 cashback
    assert (await redeem(client, till, card, 10, "spent")).status_code == 201

    body = await returned_ok(client, till, accrual, 10_000)
    assert body["taken_back"] == {"points": 100, "cashback": 500}
    assert body["balance"] == {"points": -10, "cashback": 0}
    assert body["debt"] == {"points": 10, "cashback": 0}
    shown = await balance(client, till, card)
    assert (shown["points"], shown["cashback"]) == (-10, 0)
    assert shown["debt"] == {"points": 10, "cashback": 0}
    assert shown["held"] == {"points": 0, "cashback": 0}
    assert shown["total"] == {"points": -10, "cashback": 0}
    await ledger_ok(client, operator, engine)

    # Nothing can be spent while the debt lasts: not redeemed, held, or given away.
    before = await snapshot(engine)
    for refused in (
        await redeem(client, till, card, 1, "in-debt"),
        await hold(client, till, card, 1),
        await transfer(client, operator, card, other, 1),
    ):
        problem = assert_problem(refused, 422, "insufficient_balance")
        assert (problem["asset"], problem["available"], problem["requested"]) == ("points", -10, 1)
    assert await snapshot(engine) == before

    # Earning still works, and pays the debt off.
    r = await purchase(client, till, card, 500, "pays-half")
    assert r.status_code == 201, r.text
    assert r.json()["balance"] == {"points": -5, "cashback": 25}
    assert (await balance(client, till, card))["debt"] == {"points": 5, "cashback": 0}
    assert_problem(
        await redeem(client, till, card, 1, "still-in-debt"), 422, "insufficient_balance"
    )
    # Cashback carries no debt: it can be spent meanwhile.
    assert (await redeem(client, till, card, 25, "cb", asset="cashback")).status_code == 201

    r = await purchase(client, till, card, 700, "pays-the-rest")
    assert r.json()["balance"] == {"points": 2, "cashback": 35}
    assert (await balance(client, till, card))["debt"] == {"points": 0, "cashback": 0}
    spent = await redeem(client, till, card, 2, "out-of-debt")
    assert spent.status_code == 201, spent.text
    assert spent.json()["balance"] == {"points": 0, "cashback": 35}
    await ledger_ok(client, operator, engine)


async def test_a_partial_return_claws_back_only_its_share(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = await buy(client, till, card, 10_000)
    assert (await redeem(client, till, card, 80, "spent")).status_code == 201
    assert (await redeem(client, till, card, 450, "spent-cb", asset="cashback")).status_code == 201

    body = await returned_ok(client, till, accrual, 3_000)  # takes 30 points, 150 cashback
    assert body["balance"] == {"points": -10, "cashback": -100}
    assert body["debt"] == {"points": 10, "cashback": 100}
    assert (await balance(client, till, card))["debt"] == {"points": 10, "cashback": 100}
    problem = assert_problem(
        await redeem(client, till, card, 1, "cb-in-debt", asset="cashback"),
        422,
        "insufficient_balance",
    )
    assert (problem["asset"], problem["available"]) == ("cashback", -100)
    await ledger_ok(client, operator, engine)


async def test_reversing_a_spent_purchase_leaves_a_debt(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = await buy(client, till, card, 10_000)
    assert (await redeem(client, till, card, 100, "all-points")).status_code == 201
    assert (await redeem(client, till, card, 200, "some-cb", asset="cashback")).status_code == 201

    r = await reverse(client, till, accrual)
    assert r.status_code == 201, r.text
    assert r.json()["balance"] == {"points": -100, "cashback": -200}
    shown = await balance(client, till, card)
    assert shown["debt"] == {"points": 100, "cashback": 200}
    assert_problem(await hold(client, till, card, 1, "cashback"), 422, "insufficient_balance")
    # The reversed purchase's goods cannot be returned too.
    assert_problem(await give_back(client, till, accrual, 1), 409, "already_reversed")

    r = await purchase(client, till, card, 20_000, "pays-it-off")
    assert r.json()["balance"] == {"points": 100, "cashback": 800}
    assert (await redeem(client, till, card, 100, "spend-again")).status_code == 201
    await ledger_ok(client, operator, engine)


async def test_a_return_on_a_card_with_a_lapsed_hold_answers_the_balance_the_card_shows(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """A lapsed hold counts as available at once (app/holds/expiry.py: "anything that locks a
    card to move value first releases the card's lapsed holds"). The return's answer must not
    report a debt the card does not have."""
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    accrual = await buy(client, till, card, 10_000)
    held = await hold(client, till, card, 100)
    assert held.status_code == 201, held.text
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": held.json()["id"]},
        )
    assert await available(client, till, card) == {"points": 100, "cashback": 500}

    body = await returned_ok(client, till, accrual, 5_000)

    shown = await balance(client, till, card)
    assert (shown["points"], shown["debt"]) == (50, {"points": 0, "cashback": 0})
    assert (body["balance"], body["debt"]) == (
        {"points": shown["points"], "cashback": shown["cashback"]},
        shown["debt"],
    )

"""The card's life over HTTP: transfers between cards, replacing a lost card, merging two cards
of one customer, closing an empty card; and the races between those and ordinary postings.

Every check of the books goes through GET /v1/audit and, where a refusal must leave nothing
behind, through a snapshot of the ledger read with SQL. (tests/ledger/helpers_ledger.py's
check_books assumes every card leg belongs to the transaction's own card, which a transfer's
receiving leg does not, so it is not used here.)
"""

import asyncio
import random
import uuid
from collections import Counter
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.schemas import luhn_valid
from tests.conftest import idem
from tests.factories.cards import funded_card, issue_card
from tests.factories.locks import queued_behind_lock
from tests.factories.partners import partner_with_key
from tests.factories.postings import purchase, redeem
from tests.ledger.helpers_ledger import api_balance, scalar

PROBLEM_JSON = "application/problem+json"


# Helpers -------------------------------------------------------------------------------------


def with_check_digit(partial: str) -> str:
    return next(partial + d for d in "0123456789" if luhn_valid(partial + d))


UNKNOWN_CARD = with_check_digit("700000000000004")


def assert_problem(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    return body


def _transfer(
    client: AsyncClient,
    headers: dict[str, str],
    from_card: str,
    to_card: str,
    amount: int,
    asset: str = "points",
    reference: str | None = None,
    key: dict[str, str] | None = None,
) -> Any:
    body: dict[str, Any] = {
        "from_card_number": from_card,
        "to_card_number": to_card,
        "asset": asset,
        "amount": amount,
        "reason": "goodwill gift",
    }
    if reference is not None:
        body["reference"] = reference
    return client.post("/v1/transfers", json=body, headers={**headers, **(key or idem())})


def _replace(
    client: AsyncClient,
    headers: dict[str, str],
    card_number: str,
    new_number: str | None = None,
    key: dict[str, str] | None = None,
) -> Any:
    body = {} if new_number is None else {"card_number": new_number}
    return client.post(
        f"/v1/cards/{card_number}/replace", json=body, headers={**headers, **(key or idem())}
    )


def _merge(
    client: AsyncClient,
    headers: dict[str, str],
    card_number: str,
    into: str,
    key: dict[str, str] | None = None,
) -> Any:
    return client.post(
        f"/v1/cards/{card_number}/merge",
        json={"into_card_number": into},
        headers={**headers, **(key or idem())},
    )


def _close(client: AsyncClient, headers: dict[str, str], card_number: str) -> Any:
    return client.post(f"/v1/cards/{card_number}/close", headers=headers)


def _award(client: AsyncClient, headers: dict[str, str], card_number: str, points: int) -> Any:
    return client.post(
        "/v1/accruals",
        json={"kind": "award", "card_number": card_number, "points": points, "reason": "bonus"},
        headers={**headers, **idem()},
    )


async def _funded_with_cashback(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], **card: Any
) -> tuple[str, dict[str, str]]:
    """A card holding 25 points and 127 cents of cashback (a 25.50 EUR purchase at a partner
    earning 1 point per 1.00 and 5 %), and the partner's till headers."""
    _, till = await partner_with_key(app, client, operator)
    number = (await issue_card(client, operator, **card))["card_number"]
    r = await purchase(client, till, number, 2_550, f"rcpt-{uuid.uuid4()}")
    assert r.status_code == 201, r.text
    assert r.json()["earned"] == {"points": 25, "cashback": 127}
    return number, till


async def _card(client: AsyncClient, headers: dict[str, str], number: str) -> dict[str, Any]:
    r = await client.get(f"/v1/cards/{number}", headers=headers)
    assert r.status_code == 200, r.text
    card: dict[str, Any] = r.json()
    return card


async def _history(
    client: AsyncClient, headers: dict[str, str], number: str
) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/cards/{number}/transactions", headers=headers)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def _assert_audit_ok(client: AsyncClient, operator: dict[str, str]) -> dict[str, Any]:
    r = await client.get("/v1/audit", headers=operator)
    assert r.status_code == 200, r.text
    report: dict[str, Any] = r.json()
    assert report["ok"] is True, report
    assert set(report["asset_totals"].values()) <= {0}, report
    return report


_SNAPSHOT = text("""
    SELECT (SELECT count(*) FROM transactions) AS transactions,
           (SELECT count(*) FROM entries) AS entries,
           (SELECT count(*) FROM cards) AS cards,
           (SELECT array_agg(c.card_number || ':' || c.status || ':'
                             || coalesce(CAST(c.replaced_by_card_id AS text), '-')
                             ORDER BY c.id) FROM cards c) AS card_states,
           (SELECT array_agg(a.id || ':' || a.balance || ':' || (a.closed_at IS NOT NULL)
                             ORDER BY a.id) FROM accounts a) AS accounts
""")


async def _ledger(engine: AsyncEngine) -> tuple[Any, ...]:
    """Everything a refused request must leave as it was."""
    async with engine.connect() as conn:
        return tuple((await conn.execute(_SNAPSHOT)).one())


async def _after(delay: float, request: Any) -> Any:
    """`request`, sent `delay` seconds from now: spreads a race over the batcher's groups."""
    await asyncio.sleep(delay)
    return await request


async def _closed_card(client: AsyncClient, operator: dict[str, str], **body: Any) -> str:
    number: str = (await issue_card(client, operator, **body))["card_number"]
    r = await _close(client, operator, number)
    assert r.status_code == 200, r.text
    return number


# Transfers -----------------------------------------------------------------------------------


async def test_transfer_points_moves_value_and_shows_in_both_histories(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    source = (await funded_card(client, operator, 100))["card_number"]
    target = (await issue_card(client, operator))["card_number"]

    r = await _transfer(client, operator, source, target, 30, reference="gift-1")

    assert r.status_code == 201, r.text
    body = r.json()
    tx_id = body["transaction_id"]
    assert body == {
        "transaction_id": tx_id,
        "from_card_number": source,
        "to_card_number": target,
        "asset": "points",
        "amount": 30,
        "reason": "goodwill gift",
        "reference": "gift-1",
        "from_balance": {"points": 70, "cashback": 0},
        "to_balance": {"points": 30, "cashback": 0},
    }
    assert await api_balance(client, operator, source) == (70, 0)
    assert await api_balance(client, operator, target) == (30, 0)

    tx = await client.get(f"/v1/transactions/{tx_id}", headers=operator)
    assert tx.status_code == 200, tx.text
    tx_body = tx.json()
    assert tx_body["type"] == "transfer"
    assert tx_body["card_number"] == source
    assert tx_body["partner_id"] is None
    assert tx_body["reference"] == "gift-1"
    assert sorted(
        (e["card_number"], e["account_kind"], e["asset"], e["amount"]) for e in tx_body["entries"]
    ) == sorted([(source, "card", "points", -30), (target, "card", "points", 30)])

    source_history = await _history(client, operator, source)
    assert [(i["id"], i["type"], i["points"], i["cashback"]) for i in source_history] == [
        (tx_id, "transfer", -30, 0),
        (source_history[1]["id"], "award", 100, 0),
    ]
    target_history = await _history(client, operator, target)
    assert [(i["id"], i["type"], i["points"], i["cashback"]) for i in target_history] == [
        (tx_id, "transfer", 30, 0)
    ]
    assert target_history[0]["reference"] == "gift-1"
    await _assert_audit_ok(client, operator)


async def test_transfer_cashback(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    source, _ = await _funded_with_cashback(app, client, operator)
    target = (await funded_card(client, operator, 5))["card_number"]

    r = await _transfer(client, operator, source, target, 100, asset="cashback")

    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["asset"], body["amount"]) == ("cashback", 100)
    assert body["from_balance"] == {"points": 25, "cashback": 27}
    assert body["to_balance"] == {"points": 5, "cashback": 100}
    assert await api_balance(client, operator, source) == (25, 27)
    assert await api_balance(client, operator, target) == (5, 100)

    tx = (await client.get(f"/v1/transactions/{body['transaction_id']}", headers=operator)).json()
    assert tx["type"] == "transfer"
    assert sorted((e["card_number"], e["asset"], e["amount"]) for e in tx["entries"]) == sorted(
        [(source, "cashback", -100), (target, "cashback", 100)]
    )
    source_top = (await _history(client, operator, source))[0]
    target_top = (await _history(client, operator, target))[0]
    assert (source_top["id"], source_top["points"], source_top["cashback"]) == (
        body["transaction_id"],
        0,
        -100,
    )
    assert (target_top["id"], target_top["points"], target_top["cashback"]) == (
        body["transaction_id"],
        0,
        100,
    )
    # The whole balance may go.
    r = await _transfer(client, operator, source, target, 27, asset="cashback")
    assert r.status_code == 201, r.text
    assert await api_balance(client, operator, source) == (25, 0)
    assert await api_balance(client, operator, target) == (5, 127)
    await _assert_audit_ok(client, operator)


async def test_transfer_refusals_leave_the_ledger_unchanged(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    source = (await funded_card(client, operator, 100))["card_number"]
    target = (await issue_card(client, operator))["card_number"]
    closed = await _closed_card(client, operator)
    _, till = await partner_with_key(app, client, operator)
    before = await _ledger(engine)

    cases: list[tuple[Any, int, str]] = [
        (_transfer(client, operator, source, source, 10), 422, "same_card"),
        (_transfer(client, operator, source, target, 101), 422, "insufficient_balance"),
        (_transfer(client, operator, target, source, 1), 422, "insufficient_balance"),
        (
            _transfer(client, operator, source, target, 1, asset="cashback"),
            422,
            "insufficient_balance",
        ),
        (_transfer(client, operator, UNKNOWN_CARD, target, 10), 404, "card_not_found"),
        (_transfer(client, operator, source, UNKNOWN_CARD, 10), 404, "card_not_found"),
        (_transfer(client, operator, source, closed, 10), 409, "card_closed"),
        (_transfer(client, operator, closed, source, 10), 409, "card_closed"),
        (_transfer(client, till, source, target, 10), 403, "forbidden"),
        (_transfer(client, operator, source, target, 0), 422, "validation_error"),
        (
            client.post(
                "/v1/transfers",
                json={
                    "from_card_number": source,
                    "to_card_number": target,
                    "asset": "points",
                    "amount": 10,
                    "reason": "no key",
                },
                headers=operator,
            ),
            400,
            "idempotency_key_required",
        ),
    ]
    for request, status, code in cases:
        problem = assert_problem(await request, status, code)
        if code == "insufficient_balance":
            assert problem["requested"] in (101, 1)
            assert problem["available"] in (100, 0)

    assert await _ledger(engine) == before
    assert await api_balance(client, operator, source) == (100, 0)
    assert await api_balance(client, operator, target) == (0, 0)
    insufficient = assert_problem(
        await _transfer(client, operator, source, target, 101), 422, "insufficient_balance"
    )
    assert (insufficient["asset"], insufficient["available"], insufficient["requested"]) == (
        "points",
        100,
        101,
    )
    await _assert_audit_ok(client, operator)


async def test_transfer_retry_replays_byte_identically_and_moves_once(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    source = (await funded_card(client, operator, 100))["card_number"]
    target = (await issue_card(client, operator))["card_number"]
    key = idem()

    first = await _transfer(client, operator, source, target, 40, key=key)
    second = await _transfer(client, operator, source, target, 40, key=key)

    assert first.status_code == second.status_code == 201, (first.text, second.text)
    assert second.content == first.content
    assert first.headers.get("Idempotent-Replayed") is None
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert await api_balance(client, operator, source) == (60, 0)
    assert await api_balance(client, operator, target) == (40, 0)
    assert await scalar(engine, "SELECT count(*) FROM transactions WHERE type = 'transfer'") == 1

    # The same key with another body is refused, and moves nothing.
    assert_problem(
        await _transfer(client, operator, source, target, 41, key=key),
        422,
        "idempotency_key_reused",
    )
    # A refusal is an answer too: the retry stays refused after the card was funded.
    refused_key = idem()
    assert_problem(
        await _transfer(client, operator, target, source, 50, key=refused_key),
        422,
        "insufficient_balance",
    )
    assert (await _award(client, operator, target, 100)).status_code == 201
    retried = await _transfer(client, operator, target, source, 50, key=refused_key)
    assert_problem(retried, 422, "insufficient_balance")
    assert retried.headers.get("Idempotent-Replayed") == "true"
    assert await api_balance(client, operator, target) == (140, 0)
    assert await api_balance(client, operator, source) == (60, 0)
    await _assert_audit_ok(client, operator)


async def test_transfer_duplicate_reference_with_a_new_key_is_refused(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    source = (await funded_card(client, operator, 100))["card_number"]
    target = (await issue_card(client, operator))["card_number"]
    assert (await _transfer(client, operator, source, target, 10, reference="r-1")).status_code == (
        201
    )
    before = await _ledger(engine)

    assert_problem(
        await _transfer(client, operator, source, target, 10, reference="r-1"),
        409,
        "duplicate_reference",
    )
    assert await _ledger(engine) == before
    # The same reference on other cards is the same operator reference.
    other = (await funded_card(client, operator, 10))["card_number"]
    before = await _ledger(engine)
    assert_problem(
        await _transfer(client, operator, other, target, 5, reference="r-1"),
        409,
        "duplicate_reference",
    )
    assert await _ledger(engine) == before
    assert await api_balance(client, operator, source) == (90, 0)
    assert await api_balance(client, operator, target) == (10, 0)
    assert await api_balance(client, operator, other) == (10, 0)
    await _assert_audit_ok(client, operator)


# Replace -------------------------------------------------------------------------------------


async def test_replace_moves_balances_to_a_new_card_and_closes_the_old(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    old, till = await _funded_with_cashback(
        app, client, operator, kind="personalized", customer_reference="cust-42"
    )
    assert (await _award(client, operator, old, 75)).status_code == 201  # 100 points, 127 cents
    old_history_before = await _history(client, operator, old)
    new_number = with_check_digit("700012345678901")

    r = await _replace(client, operator, old, new_number)

    assert r.status_code == 201, r.text
    body = r.json()
    assert body["moved"] == {"points": 100, "cashback": 127}
    assert body["transaction_id"] is not None
    old_card, new_card = body["old_card"], body["new_card"]
    assert old_card["card_number"] == old
    assert (old_card["status"], old_card["replaced_by"]) == ("closed", new_number)
    assert old_card["closed_at"] is not None
    assert (old_card["points"], old_card["cashback"]) == (0, 0)
    assert new_card["card_number"] == new_number
    assert (new_card["kind"], new_card["customer_reference"]) == ("personalized", "cust-42")
    assert (new_card["status"], new_card["closed_at"], new_card["replaced_by"]) == (
        "active",
        None,
        None,
    )
    assert (new_card["points"], new_card["cashback"]) == (100, 127)

    assert await _card(client, operator, old) == old_card
    assert await _card(client, operator, new_number) == new_card
    assert await api_balance(client, operator, old) == (0, 0)
    assert await api_balance(client, operator, new_number) == (100, 127)
    balance = await client.get(f"/v1/cards/{old}/balance", headers=operator)
    assert balance.json()["status"] == "closed"

    tx = (await client.get(f"/v1/transactions/{body['transaction_id']}", headers=operator)).json()
    assert tx["type"] == "transfer"
    assert tx["card_number"] == old
    assert sorted((e["card_number"], e["asset"], e["amount"]) for e in tx["entries"]) == sorted(
        [
            (old, "points", -100),
            (new_number, "points", 100),
            (old, "cashback", -127),
            (new_number, "cashback", 127),
        ]
    )

    # The old card's history is still readable: everything before, and the move.
    old_history = await _history(client, operator, old)
    assert old_history[1:] == old_history_before
    assert (old_history[0]["id"], old_history[0]["type"]) == (body["transaction_id"], "transfer")
    assert (old_history[0]["points"], old_history[0]["cashback"]) == (-100, -127)
    new_history = await _history(client, operator, new_number)
    assert [(i["id"], i["points"], i["cashback"]) for i in new_history] == [
        (body["transaction_id"], 100, 127)
    ]

    # The old card moves no value any more, and says where it went.
    before = await _ledger(engine)
    refusals = [
        await _award(client, operator, old, 10),
        await redeem(client, operator, old, 1, "after-replace"),
        await redeem(client, operator, old, 1, "after-replace-cb", asset="cashback"),
        await purchase(client, till, old, 1_000, "rcpt-after-replace"),
        await redeem(client, till, old, 1, "till-after-replace"),
    ]
    for refused in refusals:
        problem = assert_problem(refused, 409, "card_closed")
        assert problem["replaced_by_card_number"] == new_number, problem
    for path in ("block", "unblock"):
        assert_problem(
            await client.post(f"/v1/cards/{old}/{path}", headers=operator), 409, "card_closed"
        )
    assert_problem(await _transfer(client, operator, old, new_number, 1), 409, "card_closed")
    assert_problem(await _transfer(client, operator, new_number, old, 1), 409, "card_closed")
    assert_problem(await _close(client, operator, old), 409, "card_closed")
    assert await _ledger(engine) == before
    assert (await _card(client, operator, old))["status"] == "closed"

    # The new card is a card like any other.
    spent = await redeem(client, operator, new_number, 60, "spend-new")
    assert spent.status_code == 201, spent.text
    assert spent.json()["balance"] == {"points": 40, "cashback": 127}
    await _assert_audit_ok(client, operator)


async def test_replace_an_empty_card_posts_nothing(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    old = (await issue_card(client, operator))["card_number"]

    r = await _replace(client, operator, old)

    assert r.status_code == 201, r.text
    body = r.json()
    assert body["transaction_id"] is None
    assert body["moved"] == {"points": 0, "cashback": 0}
    new = body["new_card"]["card_number"]
    assert new != old and luhn_valid(new)
    assert (body["new_card"]["kind"], body["new_card"]["customer_reference"]) == ("bearer", None)
    assert body["new_card"]["status"] == "active"
    assert (await _card(client, operator, old))["replaced_by"] == new
    assert (await _card(client, operator, old))["status"] == "closed"
    assert await scalar(engine, "SELECT count(*) FROM transactions") == 0
    assert await _history(client, operator, old) == []
    await _assert_audit_ok(client, operator)


async def test_replace_a_closed_card_is_refused(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    closed = await _closed_card(client, operator)
    replaced = (await funded_card(client, operator, 10))["card_number"]
    first = await _replace(client, operator, replaced)
    assert first.status_code == 201, first.text
    before = await _ledger(engine)

    assert_problem(await _replace(client, operator, closed), 409, "card_closed")
    assert_problem(await _replace(client, operator, replaced), 409, "card_closed")

    assert await _ledger(engine) == before
    assert (await _card(client, operator, replaced))["replaced_by"] == first.json()["new_card"][
        "card_number"
    ]


async def test_a_blocked_lost_card_can_be_replaced(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    old = (await funded_card(client, operator, 50))["card_number"]
    blocked = await client.post(f"/v1/cards/{old}/block", headers=operator)
    assert blocked.status_code == 200, blocked.text
    assert blocked.json()["status"] == "blocked"

    r = await _replace(client, operator, old)

    assert r.status_code == 201, r.text
    body = r.json()
    new = body["new_card"]["card_number"]
    assert body["moved"] == {"points": 50, "cashback": 0}
    assert (body["old_card"]["status"], body["old_card"]["replaced_by"]) == ("closed", new)
    assert (body["new_card"]["status"], body["new_card"]["points"]) == ("active", 50)
    assert await api_balance(client, operator, old) == (0, 0)
    assert await api_balance(client, operator, new) == (50, 0)
    assert (await redeem(client, operator, new, 50, "spend-all")).status_code == 201
    await _assert_audit_ok(client, operator)


async def test_replace_retry_replays_and_issues_one_card(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    old = (await funded_card(client, operator, 30))["card_number"]
    key = idem()

    first = await _replace(client, operator, old, key=key)
    second = await _replace(client, operator, old, key=key)

    assert first.status_code == second.status_code == 201, (first.text, second.text)
    assert second.content == first.content
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert await scalar(engine, "SELECT count(*) FROM cards") == 2
    assert await scalar(engine, "SELECT count(*) FROM transactions WHERE type = 'transfer'") == 1
    assert await api_balance(client, operator, first.json()["new_card"]["card_number"]) == (30, 0)


async def test_replace_refusals(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    old = (await funded_card(client, operator, 30))["card_number"]
    taken = (await issue_card(client, operator))["card_number"]
    _, till = await partner_with_key(app, client, operator)
    before = await _ledger(engine)

    assert_problem(await _replace(client, operator, old, taken), 409, "card_number_taken")
    assert_problem(await _replace(client, operator, UNKNOWN_CARD), 404, "card_not_found")
    assert_problem(await _replace(client, till, old), 403, "forbidden")
    assert_problem(
        await client.post(f"/v1/cards/{old}/replace", json={}, headers=operator),
        400,
        "idempotency_key_required",
    )

    assert await _ledger(engine) == before
    assert (await _card(client, operator, old))["status"] == "active"
    assert await api_balance(client, operator, old) == (30, 0)


# Merge ---------------------------------------------------------------------------------------


async def test_merge_moves_value_and_closes_the_source(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    source, _ = await _funded_with_cashback(
        app, client, operator, kind="personalized", customer_reference="cust-7"
    )
    target = (await issue_card(client, operator, kind="personalized", customer_reference="cust-7"))[
        "card_number"
    ]
    assert (await _award(client, operator, target, 10)).status_code == 201

    r = await _merge(client, operator, source, target)

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["moved"] == {"points": 25, "cashback": 127}
    assert body["transaction_id"] is not None
    assert body["card"]["card_number"] == target
    assert (body["card"]["status"], body["card"]["points"], body["card"]["cashback"]) == (
        "active",
        35,
        127,
    )
    merged = body["merged_card"]
    assert merged["card_number"] == source
    assert (merged["status"], merged["replaced_by"], merged["points"], merged["cashback"]) == (
        "closed",
        target,
        0,
        0,
    )
    assert merged["closed_at"] is not None
    assert await _card(client, operator, source) == merged
    assert await api_balance(client, operator, source) == (0, 0)
    assert await api_balance(client, operator, target) == (35, 127)

    tx = (await client.get(f"/v1/transactions/{body['transaction_id']}", headers=operator)).json()
    assert tx["type"] == "transfer"
    assert sorted((e["card_number"], e["asset"], e["amount"]) for e in tx["entries"]) == sorted(
        [
            (source, "points", -25),
            (target, "points", 25),
            (source, "cashback", -127),
            (target, "cashback", 127),
        ]
    )
    top = (await _history(client, operator, target))[0]
    assert (top["id"], top["points"], top["cashback"]) == (body["transaction_id"], 25, 127)
    top = (await _history(client, operator, source))[0]
    assert (top["id"], top["points"], top["cashback"]) == (body["transaction_id"], -25, -127)

    problem = assert_problem(await _award(client, operator, source, 1), 409, "card_closed")
    assert problem["replaced_by_card_number"] == target
    assert_problem(await _merge(client, operator, source, target), 409, "card_closed")
    assert_problem(await _merge(client, operator, target, source), 409, "card_closed")
    await _assert_audit_ok(client, operator)


async def test_merge_refusals_leave_the_ledger_unchanged(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    a = (await funded_card(client, operator, 10))["card_number"]
    b = (await issue_card(client, operator))["card_number"]
    p1 = (await issue_card(client, operator, kind="personalized", customer_reference="c-1"))[
        "card_number"
    ]
    assert (await _award(client, operator, p1, 5)).status_code == 201
    p1_twin = (await issue_card(client, operator, kind="personalized", customer_reference="c-1"))[
        "card_number"
    ]
    p2 = (await issue_card(client, operator, kind="personalized", customer_reference="c-2"))[
        "card_number"
    ]
    closed_twin = await _closed_card(
        client, operator, kind="personalized", customer_reference="c-1"
    )
    _, till = await partner_with_key(app, client, operator)
    before = await _ledger(engine)

    assert_problem(await _merge(client, operator, a, b), 422, "not_same_customer")
    assert_problem(await _merge(client, operator, p1, p2), 422, "not_same_customer")
    assert_problem(await _merge(client, operator, p1, a), 422, "not_same_customer")
    assert_problem(await _merge(client, operator, a, p1), 422, "not_same_customer")
    assert_problem(await _merge(client, operator, p1, p1), 422, "same_card")
    assert_problem(await _merge(client, operator, p1, closed_twin), 409, "card_closed")
    assert_problem(await _merge(client, operator, closed_twin, p1), 409, "card_closed")
    assert_problem(await _merge(client, operator, p1, UNKNOWN_CARD), 404, "card_not_found")
    assert_problem(await _merge(client, operator, UNKNOWN_CARD, p1), 404, "card_not_found")
    assert_problem(await _merge(client, till, p1, p1_twin), 403, "forbidden")
    assert_problem(
        await client.post(
            f"/v1/cards/{p1}/merge", json={"into_card_number": p1_twin}, headers=operator
        ),
        400,
        "idempotency_key_required",
    )

    assert await _ledger(engine) == before
    assert (await _card(client, operator, p1))["status"] == "active"
    assert await api_balance(client, operator, p1) == (5, 0)


async def test_merge_an_empty_card_posts_nothing(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    source = (await issue_card(client, operator, kind="personalized", customer_reference="c-9"))[
        "card_number"
    ]
    target = (await issue_card(client, operator, kind="personalized", customer_reference="c-9"))[
        "card_number"
    ]

    r = await _merge(client, operator, source, target)

    assert r.status_code == 200, r.text
    assert r.json()["transaction_id"] is None
    assert r.json()["moved"] == {"points": 0, "cashback": 0}
    assert (r.json()["merged_card"]["status"], r.json()["merged_card"]["replaced_by"]) == (
        "closed",
        target,
    )
    assert await scalar(engine, "SELECT count(*) FROM transactions") == 0


# Close ---------------------------------------------------------------------------------------


async def test_close_only_an_empty_card_and_then_it_refuses_postings(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    number = (await funded_card(client, operator, 20))["card_number"]
    other = (await funded_card(client, operator, 5))["card_number"]
    _, till = await partner_with_key(app, client, operator)

    before = await _ledger(engine)
    problem = assert_problem(await _close(client, operator, number), 409, "card_has_balance")
    assert "20 points" in problem["detail"]
    assert_problem(await _close(client, till, number), 403, "forbidden")
    assert_problem(await _close(client, operator, UNKNOWN_CARD), 404, "card_not_found")
    assert await _ledger(engine) == before
    assert (await _card(client, operator, number))["status"] == "active"

    assert (await redeem(client, operator, number, 20, "empty-it")).status_code == 201
    closed = await _close(client, operator, number)

    assert closed.status_code == 200, closed.text
    card = closed.json()
    assert card["card_number"] == number
    assert (card["status"], card["replaced_by"], card["points"], card["cashback"]) == (
        "closed",
        None,
        0,
        0,
    )
    assert card["closed_at"] is not None
    assert await _card(client, operator, number) == card

    before = await _ledger(engine)
    for refused in (
        await _award(client, operator, number, 10),
        await purchase(client, till, number, 1_000, "rcpt-closed"),
        await redeem(client, operator, number, 1, "closed-redeem"),
    ):
        problem = assert_problem(refused, 409, "card_closed")
        assert problem.get("replaced_by_card_number") is None
    for path in ("block", "unblock"):
        assert_problem(
            await client.post(f"/v1/cards/{number}/{path}", headers=operator), 409, "card_closed"
        )
    assert_problem(await _close(client, operator, number), 409, "card_closed")
    assert_problem(await _transfer(client, operator, other, number, 1), 409, "card_closed")
    assert_problem(await _replace(client, operator, number), 409, "card_closed")
    assert await _ledger(engine) == before
    assert len(await _history(client, operator, number)) == 2  # award, redemption
    await _assert_audit_ok(client, operator)


# Races ---------------------------------------------------------------------------------------


@pytest.mark.concurrency
async def test_redemptions_racing_a_replace_never_lose_or_double_value(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    for round_ in range(3):
        old = (await funded_card(client, operator, 100))["card_number"]
        calls = [redeem(client, operator, old, 10, f"race-{round_}-{i}") for i in range(20)]
        calls.append(_replace(client, operator, old))
        random.shuffle(calls)
        calls = [_after(random.uniform(0, 0.03), call) for call in calls]

        responses: list[Response] = await asyncio.gather(*calls)

        replaced = [r for r in responses if r.request.url.path.endswith("/replace")]
        redemptions = [r for r in responses if r.request.url.path == "/v1/redemptions"]
        assert len(replaced) == 1 and len(redemptions) == 20
        assert replaced[0].status_code == 201, replaced[0].text
        body = replaced[0].json()
        new = body["new_card"]["card_number"]
        outcomes = Counter(
            (r.status_code, r.json().get("code") if r.status_code >= 400 else None)
            for r in redemptions
        )
        assert set(outcomes) <= {
            (201, None),
            (422, "insufficient_balance"),
            (409, "card_closed"),
        }, outcomes
        redeemed = 10 * outcomes[(201, None)]
        assert redeemed + body["moved"]["points"] == 100, (outcomes, body["moved"])
        assert await api_balance(client, operator, old) == (0, 0)
        assert await api_balance(client, operator, new) == (body["moved"]["points"], 0)
        assert (await _card(client, operator, old))["status"] == "closed"
        assert (await _card(client, operator, old))["replaced_by"] == new
        posted = await scalar(
            engine,
            "SELECT count(*) FROM transactions t JOIN cards c ON c.id = t.card_id "
            "WHERE c.card_number = :n AND t.type = 'redemption'",
            n=old,
        )
        assert posted == outcomes[(201, None)]
    await _assert_audit_ok(client, operator)


@pytest.mark.concurrency
async def test_accruals_racing_a_close_never_land_on_the_closed_card(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    closes: Counter[int] = Counter()
    for _ in range(4):
        number = (await issue_card(client, operator))["card_number"]
        calls = [_award(client, operator, number, 7) for _ in range(10)]
        calls.append(_close(client, operator, number))
        random.shuffle(calls)
        calls = [_after(random.uniform(0, 0.03), call) for call in calls]

        responses: list[Response] = await asyncio.gather(*calls)

        close = next(r for r in responses if r.request.url.path.endswith("/close"))
        awards = [r for r in responses if r.request.url.path == "/v1/accruals"]
        accepted = [r for r in awards if r.status_code == 201]
        for r in awards:
            if r.status_code != 201:
                assert_problem(r, 409, "card_closed")
        points, _ = await api_balance(client, operator, number)
        assert points == 7 * len(accepted)
        card = await _card(client, operator, number)
        closes[close.status_code] += 1
        if close.status_code == 200:
            assert card["status"] == "closed"
            assert points == 0, f"{len(accepted)} awards landed on a card closed empty"
            assert accepted == []
        else:
            assert_problem(close, 409, "card_has_balance")
            assert card["status"] == "active"
            assert accepted, "the close saw a balance no award put there"
            assert all(r.status_code == 201 for r in awards)
    assert sum(closes.values()) == 4
    await _assert_audit_ok(client, operator)


# Deterministic interleavings (tests/factories/locks.py): requests queue behind the card's
# locks held by the test, and each must see the change committed before it.


@pytest.mark.concurrency
async def test_a_posting_waiting_for_a_replacement_is_refused_naming_the_new_card(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """docs/ARCHITECTURE.md: a posting that waited for the replacement's lock is refused
    card_closed "naming the replacement card"."""
    old = (await funded_card(client, operator, 100))["card_number"]

    replaced, redeemed = await queued_behind_lock(
        engine, old, _replace(client, operator, old), redeem(client, operator, old, 10, "late")
    )

    assert replaced.status_code == 201, replaced.text
    new = replaced.json()["new_card"]["card_number"]
    assert replaced.json()["moved"] == {"points": 100, "cashback": 0}
    problem = assert_problem(redeemed, 409, "card_closed")
    assert problem.get("replaced_by_card_number") == new, problem
    assert await api_balance(client, operator, old) == (0, 0)
    assert await api_balance(client, operator, new) == (100, 0)
    await _assert_audit_ok(client, operator)


@pytest.mark.concurrency
async def test_two_replacements_of_one_card_at_once_issue_one_new_card(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    old = (await funded_card(client, operator, 100))["card_number"]

    first, second = await queued_behind_lock(
        engine, old, _replace(client, operator, old), _replace(client, operator, old)
    )

    assert first.status_code == 201, first.text
    new = first.json()["new_card"]["card_number"]
    assert_problem(second, 409, "card_closed")
    assert await scalar(engine, "SELECT count(*) FROM cards") == 2
    assert (await _card(client, operator, old))["replaced_by"] == new
    assert await api_balance(client, operator, new) == (100, 0)


@pytest.mark.concurrency
async def test_a_transfer_waiting_for_a_close_does_not_land_on_the_closed_card(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    source = (await funded_card(client, operator, 100))["card_number"]
    closing = (await issue_card(client, operator))["card_number"]

    closed, moved = await queued_behind_lock(
        engine,
        closing,
        _close(client, operator, closing),
        _transfer(client, operator, source, closing, 10),
    )

    assert closed.status_code == 200, closed.text
    assert_problem(moved, 409, "card_closed")
    assert await api_balance(client, operator, closing) == (0, 0)
    assert await api_balance(client, operator, source) == (100, 0)
    assert (await _card(client, operator, closing))["status"] == "closed"

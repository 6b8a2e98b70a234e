"""Idempotency-Key: a retry gets the first answer, byte for byte, and posts nothing; the key is
scoped to the API key that sent it; a receipt reference is posted once per partner and type."""

import asyncio
import json
import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cards.numbers import luhn_check_digit
from tests.conftest import idem
from tests.factories.api_keys import bearer, insert_api_key
from tests.factories.cards import funded_card, issue_card
from tests.factories.partners import partner_with_key

PROBLEM_JSON = "application/problem+json"
REPLAYED = "Idempotent-Replayed"


async def counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM transactions) AS transactions,"
                    " (SELECT count(*) FROM entries) AS entries,"
                    " (SELECT count(*) FROM cards) AS cards"
                )
            )
        ).one()
    return {k: int(v) for k, v in row._mapping.items()}


async def balance(client: AsyncClient, operator: dict[str, str], card_number: str) -> Any:
    r = await client.get(f"/v1/cards/{card_number}/balance", headers=operator)
    assert r.status_code == 200, r.text
    body = r.json()
    return {"points": body["points"], "cashback": body["cashback"]}


def assert_replay_of(first: Response, retry: Response) -> None:
    """The retry is the first answer again, byte for byte, marked as a replay."""
    assert REPLAYED not in first.headers
    assert retry.status_code == first.status_code
    assert retry.content == first.content
    assert retry.headers["content-type"] == first.headers["content-type"]
    assert retry.headers[REPLAYED] == "true"


def unknown_card_number() -> str:
    """Luhn-valid, with a prefix ('9') the program never issues ('7')."""
    partial = "9" + str(uuid.uuid4().int)[:14]
    return partial + luhn_check_digit(partial)


@pytest.fixture
async def till(app: FastAPI, client: AsyncClient, operator: dict[str, str]) -> dict[str, str]:
    """Authorization header of a till of a partner earning 1 point per 100 and 5% cashback."""
    _, headers = await partner_with_key(app, client, operator)
    return headers


@pytest.mark.parametrize("posting", ["award", "purchase", "redemption"])
async def test_retry_replays_first_answer_and_posts_nothing(
    client: AsyncClient,
    operator: dict[str, str],
    till: dict[str, str],
    engine: AsyncEngine,
    posting: str,
) -> None:
    card = await funded_card(client, operator, 1_000)
    n = card["card_number"]
    path, body, auth = {
        "award": (
            "/v1/accruals",
            {"kind": "award", "card_number": n, "points": 7, "reason": "r"},
            operator,
        ),
        "purchase": (
            "/v1/accruals",
            {
                "kind": "purchase",
                "card_number": n,
                "amount": 2_000,
                "currency": "EUR",
                "reference": "R-1",
            },
            till,
        ),
        "redemption": (
            "/v1/redemptions",
            {"card_number": n, "asset": "points", "amount": 30, "reference": "R-1"},
            till,
        ),
    }[posting]
    headers = {**auth, **idem()}

    first = await client.post(path, json=body, headers=headers)
    assert first.status_code == 201, first.text
    after_first = await counts(engine)
    balance_after_first = await balance(client, operator, n)

    for _ in range(2):
        retry = await client.post(path, json=body, headers=headers)
        assert_replay_of(first, retry)
    assert await counts(engine) == after_first
    assert await balance(client, operator, n) == balance_after_first


async def test_retry_with_other_key_order_and_whitespace_is_the_same_request(
    client: AsyncClient, operator: dict[str, str], till: dict[str, str], engine: AsyncEngine
) -> None:
    card = await funded_card(client, operator, 100)
    body = {
        "card_number": card["card_number"],
        "asset": "points",
        "amount": 40,
        "reference": "R-ORDER",
    }
    headers = {**till, **idem(), "Content-Type": "application/json"}
    first = await client.post(
        "/v1/redemptions", content=json.dumps(body, separators=(",", ":")), headers=headers
    )
    assert first.status_code == 201, first.text
    after_first = await counts(engine)

    reordered = dict(reversed(list(body.items())))
    spaced = "\n\t " + json.dumps(reordered, indent=4, separators=(" ,  ", " :  ")) + " \r\n"
    assert spaced.encode() != first.request.content
    retry = await client.post("/v1/redemptions", content=spaced, headers=headers)

    assert_replay_of(first, retry)
    assert await counts(engine) == after_first
    assert await balance(client, operator, card["card_number"]) == {"points": 60, "cashback": 0}


@pytest.mark.parametrize(
    ("path", "change"),
    [
        pytest.param("/v1/redemptions", {"amount": 41}, id="other-amount"),
        pytest.param("/v1/redemptions", {"reference": "R-OTHER"}, id="other-reference"),
        pytest.param("/v1/redemptions", {"asset": "cashback"}, id="other-asset"),
        pytest.param("/v1/redemptions", {"occurred_at": "2026-01-01T00:00:00Z"}, id="added-field"),
        pytest.param(
            "/v1/accruals",
            {"kind": "purchase", "amount": 40, "currency": "EUR"},
            id="other-endpoint",
        ),
    ],
)
async def test_same_key_with_a_different_request_is_refused_and_posts_nothing(
    client: AsyncClient,
    operator: dict[str, str],
    till: dict[str, str],
    engine: AsyncEngine,
    path: str,
    change: dict[str, Any],
) -> None:
    card = await funded_card(client, operator, 100)
    body = {"card_number": card["card_number"], "asset": "points", "amount": 40, "reference": "R-1"}
    headers = {**till, **idem()}
    first = await client.post("/v1/redemptions", json=body, headers=headers)
    assert first.status_code == 201, first.text
    after_first = await counts(engine)

    other = {**body, **change}
    if path == "/v1/accruals":
        other.pop("asset")
    reused = await client.post(path, json=other, headers=headers)

    assert reused.status_code == 422, reused.text
    assert reused.headers["content-type"] == PROBLEM_JSON
    assert reused.json()["code"] == "idempotency_key_reused"
    assert await counts(engine) == after_first
    assert await balance(client, operator, card["card_number"]) == {"points": 60, "cashback": 0}
    # The key still belongs to the first request: its retry is still a replay.
    assert_replay_of(first, await client.post("/v1/redemptions", json=body, headers=headers))


async def test_keys_are_scoped_per_api_key(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """The same Idempotency-Key value from two API keys names two different requests."""
    other_operator = bearer(await insert_api_key(app, role="operator", name="second operator"))
    card = await issue_card(client, operator)
    body = {"kind": "award", "card_number": card["card_number"], "points": 25, "reason": "r"}
    key = idem()
    before = await counts(engine)

    first = await client.post("/v1/accruals", json=body, headers={**operator, **key})
    second = await client.post("/v1/accruals", json=body, headers={**other_operator, **key})

    assert first.status_code == 201, first.text
    assert second.status_code == 201, second.text
    assert REPLAYED not in second.headers
    assert first.json()["transaction_id"] != second.json()["transaction_id"]
    assert second.json()["balance"] == {"points": 50, "cashback": 0}
    assert (await counts(engine))["transactions"] == before["transactions"] + 2
    # Each key replays its own answer.
    assert_replay_of(
        first, await client.post("/v1/accruals", json=body, headers={**operator, **key})
    )
    retry = await client.post("/v1/accruals", json=body, headers={**other_operator, **key})
    assert_replay_of(second, retry)
    assert (await counts(engine))["transactions"] == before["transactions"] + 2


async def test_keys_are_scoped_per_api_key_of_two_partners(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till_a = await partner_with_key(app, client, operator)
    _, till_b = await partner_with_key(app, client, operator)
    card = await issue_card(client, operator)
    body = {
        "kind": "purchase",
        "card_number": card["card_number"],
        "amount": 1_000,
        "currency": "EUR",
        "reference": "R-SAME",
    }
    key = idem()

    a = await client.post("/v1/accruals", json=body, headers={**till_a, **key})
    b = await client.post("/v1/accruals", json=body, headers={**till_b, **key})

    assert a.status_code == 201, a.text
    assert b.status_code == 201, b.text
    assert REPLAYED not in b.headers
    assert a.json()["partner_id"] != b.json()["partner_id"]
    assert b.json()["balance"] == {"points": 20, "cashback": 100}
    assert (await counts(engine))["transactions"] == 2


async def test_insufficient_balance_refusal_stays_refused_after_top_up(
    client: AsyncClient, operator: dict[str, str], till: dict[str, str], engine: AsyncEngine
) -> None:
    card = await funded_card(client, operator, 50)
    n = card["card_number"]
    body = {"card_number": n, "asset": "points", "amount": 80, "reference": "R-SPEND"}
    key = idem()

    refused = await client.post("/v1/redemptions", json=body, headers={**till, **key})
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == PROBLEM_JSON
    assert refused.json()["code"] == "insufficient_balance"

    top_up = {"kind": "award", "card_number": n, "points": 100, "reason": "top-up"}
    r = await client.post("/v1/accruals", json=top_up, headers={**operator, **idem()})
    assert r.status_code == 201, r.text
    after_top_up = await counts(engine)

    retry = await client.post("/v1/redemptions", json=body, headers={**till, **key})
    assert_replay_of(refused, retry)
    assert await counts(engine) == after_top_up
    assert await balance(client, operator, n) == {"points": 150, "cashback": 0}

    # A new key is a new request: now it succeeds.
    fresh = await client.post("/v1/redemptions", json=body, headers={**till, **idem()})
    assert fresh.status_code == 201, fresh.text
    assert fresh.json()["balance"] == {"points": 70, "cashback": 0}
    assert (await counts(engine))["transactions"] == after_top_up["transactions"] + 1


@pytest.mark.parametrize("posting", ["award", "redemption"])
async def test_unknown_card_refusal_stays_refused_after_the_card_is_issued(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine, posting: str
) -> None:
    n = unknown_card_number()
    path, body = {
        "award": ("/v1/accruals", {"kind": "award", "card_number": n, "points": 5, "reason": "r"}),
        "redemption": (
            "/v1/redemptions",
            {"card_number": n, "asset": "points", "amount": 5, "reference": "R-1"},
        ),
    }[posting]
    headers = {**operator, **idem()}
    before = await counts(engine)

    refused = await client.post(path, json=body, headers=headers)
    assert refused.status_code == 404, refused.text
    assert refused.headers["content-type"] == PROBLEM_JSON
    assert refused.json()["code"] == "card_not_found"
    assert_replay_of(refused, await client.post(path, json=body, headers=headers))

    # The card now exists, with points: the stored refusal is still the answer.
    await issue_card(client, operator, card_number=n)
    award = {"kind": "award", "card_number": n, "points": 100, "reason": "funding"}
    r = await client.post("/v1/accruals", json=award, headers={**operator, **idem()})
    assert r.status_code == 201, r.text
    assert_replay_of(refused, await client.post(path, json=body, headers=headers))
    assert (await counts(engine))["transactions"] == before["transactions"] + 1

    fresh = await client.post(path, json=body, headers={**operator, **idem()})
    assert fresh.status_code == 201, fresh.text


def _posting(
    kind: str, card_number: str, reference: str, amount: int
) -> tuple[str, dict[str, Any]]:
    if kind == "purchase":
        body = {
            "kind": "purchase",
            "card_number": card_number,
            "amount": amount * 100,
            "currency": "EUR",
            "reference": reference,
        }
        return "/v1/accruals", body
    if kind == "award":
        body = {
            "kind": "award",
            "card_number": card_number,
            "points": amount,
            "reason": "r",
            "reference": reference,
        }
        return "/v1/accruals", body
    body = {"card_number": card_number, "asset": "points", "amount": amount, "reference": reference}
    return "/v1/redemptions", body


@pytest.mark.parametrize(
    ("kind", "by"),
    [
        ("purchase", "till"),
        ("redemption", "till"),
        ("redemption", "operator"),
        ("award", "operator"),
    ],
)
async def test_same_reference_twice_is_a_duplicate(
    client: AsyncClient,
    operator: dict[str, str],
    till: dict[str, str],
    engine: AsyncEngine,
    kind: str,
    by: str,
) -> None:
    """Two requests (two Idempotency-Keys) with one receipt reference: the second is refused
    with 409 duplicate_reference naming the first transaction, even with another amount."""
    auth = till if by == "till" else operator
    card = await funded_card(client, operator, 1_000)
    path, body = _posting(kind, card["card_number"], "R-RECEIPT-1", 10)
    first = await client.post(path, json=body, headers={**auth, **idem()})
    assert first.status_code == 201, first.text
    after_first = await counts(engine)
    balance_after_first = await balance(client, operator, card["card_number"])

    for amount in (10, 11):
        path, body = _posting(kind, card["card_number"], "R-RECEIPT-1", amount)
        dup = await client.post(path, json=body, headers={**auth, **idem()})

        assert dup.status_code == 409, dup.text
        assert dup.headers["content-type"] == PROBLEM_JSON
        problem = dup.json()
        assert problem["code"] == "duplicate_reference"
        assert problem["transaction_id"] == first.json()["transaction_id"]
        assert await counts(engine) == after_first
        assert await balance(client, operator, card["card_number"]) == balance_after_first


async def test_same_reference_for_another_type_is_allowed(
    client: AsyncClient, operator: dict[str, str], till: dict[str, str], engine: AsyncEngine
) -> None:
    card = await issue_card(client, operator)
    n = card["card_number"]
    path, body = _posting("purchase", n, "R-42", 10)  # earns 10 points, 50 cashback
    r = await client.post(path, json=body, headers={**till, **idem()})
    assert r.status_code == 201, r.text

    path, body = _posting("redemption", n, "R-42", 4)
    r = await client.post(path, json=body, headers={**till, **idem()})
    assert r.status_code == 201, r.text
    assert r.json()["balance"] == {"points": 6, "cashback": 50}
    assert (await counts(engine))["transactions"] == 2


async def test_same_reference_at_two_partners_is_allowed(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till_a = await partner_with_key(app, client, operator)
    _, till_b = await partner_with_key(app, client, operator)
    card = await issue_card(client, operator)
    path, body = _posting("purchase", card["card_number"], "R-0001", 10)

    a = await client.post(path, json=body, headers={**till_a, **idem()})
    b = await client.post(path, json=body, headers={**till_b, **idem()})

    assert a.status_code == 201, a.text
    assert b.status_code == 201, b.text
    assert a.json()["transaction_id"] != b.json()["transaction_id"]
    assert b.json()["balance"] == {"points": 20, "cashback": 100}
    assert (await counts(engine))["transactions"] == 2


@pytest.mark.parametrize("body", [{}, {"kind": "personalized", "customer_reference": "cust-7"}])
async def test_card_issue_retry_returns_the_same_card(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine, body: dict[str, Any]
) -> None:
    headers = {**operator, **idem()}
    first = await client.post("/v1/cards", json=body, headers=headers)
    assert first.status_code == 201, first.text

    retry = await client.post("/v1/cards", json=body, headers=headers)

    assert_replay_of(first, retry)
    assert retry.json()["card_number"] == first.json()["card_number"]
    assert (await counts(engine))["cards"] == 1
    r = await client.get(f"/v1/cards/{first.json()['card_number']}", headers=operator)
    assert r.status_code == 200, r.text


async def test_card_issue_without_key_is_not_deduplicated(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """For contrast: without an Idempotency-Key, two requests are two cards."""
    a = await client.post("/v1/cards", json={}, headers=operator)
    b = await client.post("/v1/cards", json={}, headers=operator)
    assert a.status_code == b.status_code == 201
    assert a.json()["card_number"] != b.json()["card_number"]
    assert (await counts(engine))["cards"] == 2


async def test_card_issue_key_with_a_different_body_is_refused(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    headers = {**operator, **idem()}
    first = await client.post("/v1/cards", json={}, headers=headers)
    assert first.status_code == 201, first.text

    other = {"kind": "personalized", "customer_reference": "cust-8"}
    r = await client.post("/v1/cards", json=other, headers=headers)

    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM_JSON
    assert r.json()["code"] == "idempotency_key_reused"
    assert (await counts(engine))["cards"] == 1


async def test_request_refused_by_validation_does_not_use_up_the_key(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Nothing was decided about a request that did not validate: the key is still free."""
    card = await issue_card(client, operator)
    body = {"kind": "award", "card_number": card["card_number"], "points": 5, "reason": "r"}
    headers = {**operator, **idem()}

    bad = await client.post("/v1/accruals", json={**body, "points": "5"}, headers=headers)
    assert bad.status_code == 422, bad.text
    assert bad.json()["code"] == "validation_error"

    good = await client.post("/v1/accruals", json=body, headers=headers)
    assert good.status_code == 201, good.text
    assert REPLAYED not in good.headers
    assert (await counts(engine))["transactions"] == 1


@pytest.mark.concurrency
async def test_concurrent_duplicates_post_once(
    client: AsyncClient, operator: dict[str, str], till: dict[str, str], engine: AsyncEngine
) -> None:
    """Five copies of one request sent at once: one runs, the others wait for it and replay
    its answer."""
    card = await funded_card(client, operator, 100)
    body = {"card_number": card["card_number"], "asset": "points", "amount": 30, "reference": "R"}
    headers = {**till, **idem()}
    before = await counts(engine)

    responses = await asyncio.gather(
        *(client.post("/v1/redemptions", json=body, headers=headers) for _ in range(5))
    )

    originals = [r for r in responses if REPLAYED not in r.headers]
    assert len(originals) == 1, [r.text for r in responses]
    assert originals[0].status_code == 201, originals[0].text
    for r in responses:
        if r is not originals[0]:
            assert_replay_of(originals[0], r)
    assert (await counts(engine))["transactions"] == before["transactions"] + 1
    assert await balance(client, operator, card["card_number"]) == {"points": 70, "cashback": 0}

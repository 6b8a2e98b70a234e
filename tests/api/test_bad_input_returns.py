"""Bad input to POST /v1/accruals/{id}/refunds (returns of purchases): a problem+json answer
with a stable code (and a JSON pointer to the field at fault), and nothing written."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import idem
from tests.factories.cards import issue_card
from tests.factories.partners import partner_with_key
from tests.factories.postings import purchase

PROBLEM_JSON = "application/problem+json"
MAX_AMOUNT = 10**12


async def _written(engine: AsyncEngine) -> tuple[int, ...]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM transactions), (SELECT count(*) FROM entries),"
                    " (SELECT count(*) FROM purchase_returns),"
                    " (SELECT coalesce(sum(balance), 0) FROM accounts WHERE kind = 'card')"
                )
            )
        ).one()
    return tuple(int(v) for v in row)


# (name, body, status, code, pointer): bodies posted as JSON to a real purchase's returns.
BODY_CASES: list[tuple[str, Any, int, str, str | None]] = [
    ("unknown-field", {"amount": 100, "colour": "red"}, 422, "validation_error", "/colour"),
    ("missing-amount", {"reference": "RET-1"}, 422, "validation_error", "/amount"),
    ("empty-object", {}, 422, "validation_error", "/amount"),
    ("null-amount", {"amount": None}, 422, "validation_error", "/amount"),
    ("string-amount", {"amount": "100"}, 422, "validation_error", "/amount"),
    ("float-amount", {"amount": 1.5}, 422, "validation_error", "/amount"),
    ("integral-float-amount", {"amount": 100.0}, 422, "validation_error", "/amount"),
    ("bool-amount", {"amount": True}, 422, "validation_error", "/amount"),
    ("list-amount", {"amount": [100]}, 422, "validation_error", "/amount"),
    ("zero-amount", {"amount": 0}, 422, "validation_error", "/amount"),
    ("negative-amount", {"amount": -5}, 422, "validation_error", "/amount"),
    ("amount-over-max", {"amount": MAX_AMOUNT + 1}, 422, "validation_error", "/amount"),
    ("huge-amount", {"amount": 10**30}, 422, "validation_error", "/amount"),
    ("empty-reference", {"amount": 1, "reference": ""}, 422, "validation_error", "/reference"),
    (
        "long-reference",
        {"amount": 1, "reference": "R" * 65},
        422,
        "validation_error",
        "/reference",
    ),
    ("spaced-reference", {"amount": 1, "reference": " r "}, 422, "validation_error", "/reference"),
    (
        "non-ascii-reference",
        {"amount": 1, "reference": "rückgabe"},
        422,
        "validation_error",
        "/reference",
    ),
    ("number-reference", {"amount": 1, "reference": 5}, 422, "validation_error", "/reference"),
    ("empty-reason", {"amount": 1, "reason": ""}, 422, "validation_error", "/reason"),
    ("long-reason", {"amount": 1, "reason": "x" * 501}, 422, "validation_error", "/reason"),
    ("number-reason", {"amount": 1, "reason": 5}, 422, "validation_error", "/reason"),
    ("array-body", [{"amount": 1}], 422, "validation_error", None),
    ("string-body", "100", 422, "validation_error", None),
    ("oversized-body", {"amount": 1, "reason": "y" * 70_000}, 413, "payload_too_large", None),
]


async def _setup(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> tuple[dict[str, str], str]:
    """A partner's till and one of its purchases (earning 100 points, 500 cashback)."""
    _, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    r = await purchase(client, till, card, 10_000, "rcpt-1")
    assert r.status_code == 201, r.text
    return till, str(r.json()["transaction_id"])


def _assert_problem(response: Any, status: int, code: str, pointer: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert (body["status"], body["code"]) == (status, code), body
    if pointer is not None:
        assert pointer in [e["pointer"] for e in body["errors"]], body


async def test_bad_return_bodies_are_refused_and_write_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """Every case against one purchase (a database per case would cost seconds): each answer
    is checked, and the ledger after each."""
    till, accrual = await _setup(app, client, operator)
    before = await _written(engine)
    for name, body, status, code, pointer in BODY_CASES:
        response = await client.post(
            f"/v1/accruals/{accrual}/refunds", json=body, headers={**till, **idem()}
        )
        try:
            _assert_problem(response, status, code, pointer)
            assert await _written(engine) == before
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc


async def _streamed(size: int) -> AsyncIterator[bytes]:
    """A chunked body of `size` bytes that announces no length."""
    for _ in range(size // 1024):
        yield b" " * 1024


# What is wrong is not the JSON body's fields: (name, request, status, code, pointer).
async def test_requests_wrong_outside_the_body_are_refused_and_write_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    till, accrual = await _setup(app, client, operator)
    path = f"/v1/accruals/{accrual}/refunds"
    good = {"amount": 1_000}
    before = await _written(engine)

    cases: list[tuple[str, Any, int, str, str | None]] = [
        (
            "non-uuid-id",
            lambda: client.post(
                "/v1/accruals/not-a-uuid/refunds", json=good, headers={**till, **idem()}
            ),
            422,
            "validation_error",
            "/accrual_id",
        ),
        (
            "numeric-id",
            lambda: client.post(
                "/v1/accruals/12345/refunds", json=good, headers={**till, **idem()}
            ),
            422,
            "validation_error",
            "/accrual_id",
        ),
        (
            "unknown-id",
            lambda: client.post(
                f"/v1/accruals/{uuid.uuid4()}/refunds", json=good, headers={**till, **idem()}
            ),
            404,
            "transaction_not_found",
            None,
        ),
        (
            "missing-idempotency-key",
            lambda: client.post(path, json=good, headers=till),
            400,
            "idempotency_key_required",
            None,
        ),
        (
            "blank-idempotency-key",
            lambda: client.post(path, json=good, headers={**till, "Idempotency-Key": "a key"}),
            422,
            "validation_error",
            "/Idempotency-Key",
        ),
        (
            "long-idempotency-key",
            lambda: client.post(path, json=good, headers={**till, "Idempotency-Key": "k" * 256}),
            422,
            "validation_error",
            "/Idempotency-Key",
        ),
        (
            "no-credentials",
            lambda: client.post(path, json=good, headers=idem()),
            401,
            "unauthorized",
            None,
        ),
        (
            "malformed-json",
            lambda: client.post(
                path,
                content=b'{"amount": 1',
                headers={**till, **idem(), "Content-Type": "application/json"},
            ),
            400,
            "malformed_json",
            None,
        ),
        (
            "no-body",
            lambda: client.post(path, headers={**till, **idem()}),
            422,
            "validation_error",
            None,
        ),
        (
            "oversized-undeclared",
            lambda: client.post(
                path,
                content=_streamed(70 * 1024),  # no Content-Length
                headers={**till, **idem(), "Content-Type": "application/json"},
            ),
            413,
            "payload_too_large",
            None,
        ),
    ]
    for name, request, status, code, pointer in cases:
        response = await request()
        try:
            _assert_problem(response, status, code, pointer)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc
    assert await _written(engine) == before

    # And the purchase is still whole: all of it can be returned.
    r = await client.post(path, json={"amount": 10_000}, headers={**till, **idem()})
    assert r.status_code == 201, r.text
    assert r.json()["taken_back"] == {"points": 100, "cashback": 500}

"""Bad input to the correction and card-life endpoints: a clear problem+json answer with a
stable code, and nothing written."""

import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import idem
from tests.factories.cards import funded_card
from tests.factories.partners import partner_with_key

BIG = {"x": "y" * 70_000}  # over the 64 KiB body limit


async def _ledger(engine: AsyncEngine) -> tuple[int, ...]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM transactions), (SELECT count(*) FROM entries),"
                    " (SELECT coalesce(sum(balance), 0) FROM accounts WHERE kind = 'card'),"
                    " (SELECT count(*) FROM cards WHERE status = 'closed')"
                )
            )
        ).one()
    return tuple(int(v) for v in row)


CASES: list[tuple[str, str, Any, int, str, str | None]] = [
    # (name, path template, body, status, code, pointer)
    (
        "reversal-unknown-field",
        "/v1/transactions/{tx}/reversal",
        {"colour": 1},
        422,
        "validation_error",
        "/colour",
    ),
    (
        "reversal-reason-type",
        "/v1/transactions/{tx}/reversal",
        {"reason": 5},
        422,
        "validation_error",
        "/reason",
    ),
    (
        "reversal-bad-id",
        "/v1/transactions/not-a-uuid/reversal",
        {},
        422,
        "validation_error",
        "/transaction_id",
    ),
    ("reversal-oversized", "/v1/transactions/{tx}/reversal", BIG, 413, "payload_too_large", None),
    (
        "refund-zero",
        "/v1/redemptions/{tx}/refunds",
        {"amount": 0},
        422,
        "validation_error",
        "/amount",
    ),
    (
        "refund-negative",
        "/v1/redemptions/{tx}/refunds",
        {"amount": -5},
        422,
        "validation_error",
        "/amount",
    ),
    (
        "refund-huge",
        "/v1/redemptions/{tx}/refunds",
        {"amount": 10**30},
        422,
        "validation_error",
        "/amount",
    ),
    (
        "refund-string",
        "/v1/redemptions/{tx}/refunds",
        {"amount": "5"},
        422,
        "validation_error",
        "/amount",
    ),
    (
        "refund-float",
        "/v1/redemptions/{tx}/refunds",
        {"amount": 1.5},
        422,
        "validation_error",
        "/amount",
    ),
    (
        "refund-unknown-field",
        "/v1/redemptions/{tx}/refunds",
        {"amount": 1, "x": 1},
        422,
        "validation_error",
        "/x",
    ),
    (
        "refund-bad-reference",
        "/v1/redemptions/{tx}/refunds",
        {"amount": 1, "reference": " r "},
        422,
        "validation_error",
        "/reference",
    ),
    (
        "refund-unknown-id",
        f"/v1/redemptions/{uuid.uuid4()}/refunds",
        {"amount": 1},
        404,
        "transaction_not_found",
        None,
    ),
    (
        "transfer-huge",
        "/v1/transfers",
        {
            "from_card_number": "{card}",
            "to_card_number": "{other}",
            "asset": "points",
            "amount": 2**63,
            "reason": "r",
        },
        422,
        "validation_error",
        "/amount",
    ),
    (
        "transfer-bad-card",
        "/v1/transfers",
        {
            "from_card_number": "12ab",
            "to_card_number": "{other}",
            "asset": "points",
            "amount": 1,
            "reason": "r",
        },
        422,
        "validation_error",
        "/from_card_number",
    ),
    (
        "transfer-bad-asset",
        "/v1/transfers",
        {
            "from_card_number": "{card}",
            "to_card_number": "{other}",
            "asset": "miles",
            "amount": 1,
            "reason": "r",
        },
        422,
        "validation_error",
        "/asset",
    ),
    (
        "replace-bad-number",
        "/v1/cards/{card}/replace",
        {"card_number": "1234567890123456"},
        422,
        "validation_error",
        "/card_number",
    ),
    (
        "replace-unknown-field",
        "/v1/cards/{card}/replace",
        {"kind": "bearer"},
        422,
        "validation_error",
        "/kind",
    ),
    ("replace-bad-path", "/v1/cards/{bad}/replace", {}, 422, "validation_error", "/card_number"),
    (
        "merge-missing-target",
        "/v1/cards/{card}/merge",
        {},
        422,
        "validation_error",
        "/into_card_number",
    ),
    ("merge-oversized", "/v1/cards/{card}/merge", BIG, 413, "payload_too_large", None),
    ("close-bad-path", "/v1/cards/{bad}/close", None, 422, "validation_error", "/card_number"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
async def test_bad_correction_input_is_refused_and_writes_nothing(
    case: tuple[str, str, Any, int, str, str | None],
    app: FastAPI,
    client: AsyncClient,
    operator: dict[str, str],
    engine: AsyncEngine,
) -> None:
    _, path, body, status, code, pointer = case
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    other = (await funded_card(client, operator, 5))["card_number"]
    spend = {"card_number": card, "asset": "points", "amount": 10, "reference": "r-1"}
    tx = (await client.post("/v1/redemptions", json=spend, headers={**till, **idem()})).json()[
        "transaction_id"
    ]
    bad = card[:-1] + str((int(card[-1]) + 1) % 10)
    fill = {"{tx}": tx, "{card}": card, "{other}": other, "{bad}": bad}

    def filled(value: Any) -> Any:
        if isinstance(value, str):
            for marker, real in fill.items():
                value = value.replace(marker, real)
            return value
        if isinstance(value, dict):
            return {k: filled(v) for k, v in value.items()}
        return value

    before = await _ledger(engine)
    response = await client.post(filled(path), json=filled(body), headers={**operator, **idem()})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    if pointer is not None:
        assert pointer in [e["pointer"] for e in response.json()["errors"]], response.text
    assert await _ledger(engine) == before

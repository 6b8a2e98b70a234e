"""Partners' prices: effective-dated terms (never to the past), and every posting recording the
price in force for its partner when it happened, which corrections keep."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import idem
from tests.factories.cards import funded_card, issue_card
from tests.factories.partners import partner_with_key
from tests.factories.postings import purchase, redeem
from tests.ledger.helpers_ledger import scalar
from tests.ledger.test_returns import assert_problem, give_back, ledger_ok


def price_body(issue: int, reimbursement: int, **extra: Any) -> dict[str, Any]:
    return {"issue_per_1000": issue, "reimbursement_per_1000": reimbursement, **extra}


async def set_price(
    client: AsyncClient, operator: dict[str, str], partner_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    r = await client.post(f"/v1/partners/{partner_id}/prices", json=body, headers=operator)
    assert r.status_code == 201, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def price_of(engine: AsyncEngine, transaction_id: str) -> int | None:
    value = await scalar(
        engine, f"SELECT points_price FROM transactions WHERE id = '{transaction_id}'"
    )
    return None if value is None else int(value)


async def test_terms_are_versioned_listed_and_read_by_their_partner_only(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    other, other_till = await partner_with_key(app, client, operator)
    now = await set_price(client, operator, partner["id"], price_body(800, 600))
    later_at = datetime.now(UTC) + timedelta(days=30)
    later = await set_price(
        client,
        operator,
        partner["id"],
        price_body(
            900, 650, effective_from=later_at.isoformat(), fee_per_period=5_000, fee_bps=150
        ),
    )
    assert (now["issue_per_1000"], now["reimbursement_per_1000"]) == (800, 600)
    assert now["funds_cashback"] is True and (now["fee_per_period"], now["fee_bps"]) == (0, 0)
    assert datetime.fromisoformat(later["effective_from"]) == later_at

    listed = await client.get(f"/v1/partners/{partner['id']}/prices", headers=till)
    assert listed.status_code == 200, listed.text
    assert listed.json() == [later, now]
    assert_problem(
        await client.get(f"/v1/partners/{partner['id']}/prices", headers=other_till),
        403,
        "forbidden",
    )
    assert (await client.get(f"/v1/partners/{other['id']}/prices", headers=operator)).json() == []
    assert_problem(
        await client.post(
            f"/v1/partners/{partner['id']}/prices", json=price_body(1, 1), headers=till
        ),
        403,
        "forbidden",
    )


async def test_terms_never_apply_to_the_past_nor_twice_from_one_moment(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, _ = await partner_with_key(app, client, operator)
    url = f"/v1/partners/{partner['id']}/prices"
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    assert_problem(
        await client.post(url, json=price_body(1, 1, effective_from=past), headers=operator),
        422,
        "price_in_the_past",
    )
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    await set_price(client, operator, partner["id"], price_body(1, 1, effective_from=future))
    assert_problem(
        await client.post(url, json=price_body(2, 2, effective_from=future), headers=operator),
        409,
        "price_exists",
    )
    assert_problem(
        await client.post(
            f"/v1/partners/{uuid.uuid4()}/prices", json=price_body(1, 1), headers=operator
        ),
        404,
        "partner_not_found",
    )
    for bad in (
        price_body(-1, 1),
        price_body(1, "600"),
        price_body(1, 1.5),
        price_body(10**9 + 1, 1),
        price_body(1, 1, fee_bps=10_001),
        price_body(1, 1, fee_per_period=-5),
        price_body(1, 1, funds_cashback="yes"),
        price_body(1, 1, effective_from="2026-12-01T10:00:00"),  # no time zone
        price_body(1, 1, surprise=True),
        {"issue_per_1000": 1},
    ):
        assert_problem(await client.post(url, json=bad, headers=operator), 422, "validation_error")
    assert await scalar(engine, "SELECT count(*) FROM partner_prices") == 1


async def test_each_posting_records_the_price_in_force_and_corrections_keep_it(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    unpriced = await purchase(client, till, card, 10_000, "R-0")
    assert await price_of(engine, unpriced.json()["transaction_id"]) is None

    await set_price(client, operator, partner["id"], price_body(800, 600))
    first = (await purchase(client, till, card, 10_000, "R-1")).json()["transaction_id"]
    spent = (await redeem(client, till, card, 50, "S-1")).json()["transaction_id"]
    cashback = (await redeem(client, till, card, 100, "S-2", asset="cashback")).json()
    assert (await price_of(engine, first), await price_of(engine, spent)) == (800, 600)
    assert await price_of(engine, cashback["transaction_id"]) is None

    await set_price(client, operator, partner["id"], price_body(900, 650))
    second = (await purchase(client, till, card, 10_000, "R-2")).json()["transaction_id"]
    returned = await give_back(client, till, first, 10_000, reference="RET-1")
    assert returned.status_code == 201, returned.text
    refund = await client.post(
        f"/v1/redemptions/{spent}/refunds", json={"amount": 50}, headers={**till, **idem()}
    )
    assert refund.status_code == 201, refund.text

    assert await price_of(engine, second) == 900
    assert await price_of(engine, returned.json()["transaction_id"]) == 800
    assert await price_of(engine, refund.json()["transaction_id"]) == 600
    await ledger_ok(client, operator, engine)


async def test_a_late_purchase_is_valued_at_the_price_of_its_day_and_a_future_price_waits(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    async with engine.begin() as conn:
        from sqlalchemy import text

        # Terms set two days ago (the API refuses the past; the table is what it would hold).
        await conn.execute(
            text(
                "INSERT INTO partner_prices (partner_id, effective_from, issue_per_1000, "
                "reimbursement_per_1000, funds_cashback, fee_per_period, fee_bps) "
                "VALUES (:p, now() - interval '2 days', 700, 500, true, 0, 0)"
            ),
            {"p": partner["id"]},
        )
    await set_price(client, operator, partner["id"], price_body(800, 600))
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    await set_price(client, operator, partner["id"], price_body(999, 999, effective_from=tomorrow))

    late = client.post(
        "/v1/accruals",
        json={
            "kind": "purchase",
            "card_number": card,
            "amount": 10_000,
            "currency": "EUR",
            "reference": "OFFLINE-1",
            "occurred_at": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
        },
        headers={**till, **idem()},
    )
    now = purchase(client, till, card, 10_000, "R-1")
    late_id = (await late).json()["transaction_id"]
    now_id = (await now).json()["transaction_id"]
    assert (await price_of(engine, late_id), await price_of(engine, now_id)) == (700, 800)


async def test_a_capture_records_the_reimbursement_and_its_refund_keeps_it(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 500))["card_number"]
    await set_price(client, operator, partner["id"], price_body(800, 600))
    hold = await client.post(
        "/v1/holds",
        json={"card_number": card, "asset": "points", "amount": 200, "reference": "ORDER-1"},
        headers={**till, **idem()},
    )
    assert hold.status_code == 201, hold.text
    await set_price(client, operator, partner["id"], price_body(800, 610))
    captured = await client.post(
        f"/v1/holds/{hold.json()['id']}/capture", json={}, headers={**till, **idem()}
    )
    assert captured.status_code == 200, captured.text
    capture_id = captured.json()["settled_by"]
    refund = await client.post(
        f"/v1/redemptions/{capture_id}/refunds", json={"amount": 80}, headers={**till, **idem()}
    )
    assert refund.status_code == 201, refund.text

    assert await price_of(engine, hold.json()["id"]) is None  # a hold moves nothing to anyone
    assert await price_of(engine, capture_id) == 610
    assert await price_of(engine, refund.json()["transaction_id"]) == 610
    await ledger_ok(client, operator, engine)

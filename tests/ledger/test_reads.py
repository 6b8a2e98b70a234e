"""Reads: a card's balance, its history page by page, and one transaction with its entries."""

import base64
from collections import defaultdict
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient, Response

from tests.conftest import idem
from tests.factories.cards import funded_card, issue_card
from tests.factories.partners import partner_with_key

PROBLEM_JSON = "application/problem+json"


def assert_problem(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    return body


async def post(client: AsyncClient, path: str, headers: dict[str, str], **body: Any) -> str:
    response = await client.post(path, json=body, headers={**headers, **idem()})
    assert response.status_code == 201, response.text
    tx_id: str = response.json()["transaction_id"]
    return tx_id


async def purchase(
    client: AsyncClient, headers: dict[str, str], number: str, reference: str, amount: int
) -> str:
    return await post(
        client,
        "/v1/accruals",
        headers,
        kind="purchase",
        card_number=number,
        amount=amount,
        currency="EUR",
        reference=reference,
    )


async def redeem(
    client: AsyncClient, headers: dict[str, str], number: str, reference: str, **extra: Any
) -> str:
    return await post(
        client, "/v1/redemptions", headers, card_number=number, reference=reference, **extra
    )


async def award(client: AsyncClient, operator: dict[str, str], number: str, points: int) -> str:
    return await post(
        client,
        "/v1/accruals",
        operator,
        kind="award",
        card_number=number,
        points=points,
        reason="bonus",
    )


async def test_balance(app: FastAPI, client: AsyncClient, operator: dict[str, str]) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = await issue_card(client, operator)
    number = card["card_number"]
    url = f"/v1/cards/{number}/balance"

    fresh = await client.get(url, headers=till)
    assert fresh.status_code == 200
    assert fresh.json() == {
        "card_number": number,
        "status": "active",
        "points": 0,
        "cashback": 0,
        "held": {"points": 0, "cashback": 0},
        "pending": {"points": 0, "cashback": 0},
        "total": {"points": 0, "cashback": 0},
        "debt": {"points": 0, "cashback": 0},
        "expiring": None,
        "currency": "EUR",
    }

    await award(client, operator, number, 40)
    await purchase(client, till, number, "R-1", 2_550)  # 25 points, 127 cents
    await redeem(client, till, number, "R-2", asset="cashback", amount=100)
    body = (await client.get(url, headers=operator)).json()
    assert (body["points"], body["cashback"]) == (65, 27)
    assert (await client.get(url, headers=till)).json() == body


async def test_balance_of_unknown_card_is_404(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    response = await client.get("/v1/cards/79927398713/balance", headers=operator)
    assert_problem(response, 404, "card_not_found")


async def _page_through(
    client: AsyncClient, headers: dict[str, str], number: str, limit: int
) -> tuple[list[dict[str, Any]], list[int]]:
    items: list[dict[str, Any]] = []
    sizes = []
    cursor = None
    for _ in range(20):
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get(
            f"/v1/cards/{number}/transactions", params=params, headers=headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        sizes.append(len(page["items"]))
        cursor = page["next_cursor"]
        if cursor is None:
            return items, sizes
    raise AssertionError("pagination did not end")


async def _seven_transactions(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> tuple[str, list[str]]:
    _, till = await partner_with_key(app, client, operator)
    number = (await issue_card(client, operator))["card_number"]
    posted = [
        await award(client, operator, number, 100),
        await purchase(client, till, number, "R-1", 1_000),
        await redeem(client, till, number, "R-2", asset="points", amount=30),
        await award(client, operator, number, 5),
        await purchase(client, till, number, "R-3", 2_000),
        await redeem(client, operator, number, "R-4", asset="cashback", amount=20),
        await purchase(client, till, number, "R-5", 300),
    ]
    return number, posted


async def test_history_pages_newest_first(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    number, posted = await _seven_transactions(app, client, operator)

    items, sizes = await _page_through(client, operator, number, limit=3)
    ids = [item["id"] for item in items]
    assert sizes == [3, 3, 1]
    assert ids == posted[::-1]
    assert len(set(ids)) == 7

    # What each transaction did to the card, newest first.
    assert [(i["type"], i["points"], i["cashback"]) for i in items] == [
        ("accrual", 3, 15),
        ("redemption", 0, -20),
        ("accrual", 20, 100),
        ("award", 5, 0),
        ("redemption", -30, 0),
        ("accrual", 10, 50),
        ("award", 100, 0),
    ]
    posted_at = [i["posted_at"] for i in items]
    assert posted_at == sorted(posted_at, reverse=True)
    assert items[0]["reference"] == "R-5"
    assert items[0]["purchase_amount"] == 300
    assert items[-1]["description"] == "bonus"

    # One page holding everything, and the default limit, agree.
    everything = await client.get(f"/v1/cards/{number}/transactions", headers=operator)
    assert everything.json()["next_cursor"] is None
    assert everything.json()["items"] == items
    for limit, expected_sizes in [(1, [1] * 7), (2, [2, 2, 2, 1]), (6, [6, 1]), (7, [7])]:
        paged, sizes = await _page_through(client, operator, number, limit=limit)
        assert sizes == expected_sizes, limit
        assert paged == items, limit


async def test_history_stays_stable_when_new_postings_arrive(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    number = (await issue_card(client, operator))["card_number"]
    first = [await award(client, operator, number, p) for p in (1, 2, 3, 4)]
    page = (await client.get(f"/v1/cards/{number}/transactions?limit=2", headers=operator)).json()
    assert [i["id"] for i in page["items"]] == [first[3], first[2]]
    await award(client, operator, number, 99)  # newer than the cursor: not on older pages
    rest = (
        await client.get(
            f"/v1/cards/{number}/transactions",
            params={"limit": 10, "cursor": page["next_cursor"]},
            headers=operator,
        )
    ).json()
    assert [i["id"] for i in rest["items"]] == [first[1], first[0]]
    assert rest["next_cursor"] is None


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


async def test_invalid_cursor_is_422(client: AsyncClient, operator: dict[str, str]) -> None:
    number = (await issue_card(client, operator))["card_number"]
    for cursor in [
        "garbage!",
        "x",
        _b64("nothing to see"),
        _b64("2026-01-01T00:00:00+00:00|not-a-uuid"),
        _b64("not-a-date|0190d7a4-7c5e-7000-8000-000000000000"),
        _b64("2026-01-01T00:00:00|0190d7a4-7c5e-7000-8000-000000000000"),  # naive
        _b64("2026-01-01T00:00:00+00:00|0190d7a4-7c5e-7000-8000-000000000000|extra"),
        base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
    ]:
        response = await client.get(
            f"/v1/cards/{number}/transactions", params={"cursor": cursor}, headers=operator
        )
        assert response.status_code == 422, (cursor, response.text)
        assert_problem(response, 422, "invalid_cursor")


async def test_cursor_with_out_of_range_timestamp_is_422(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    """Timestamps that parse but cannot be converted to UTC (the year 1 at +14:00 is in the
    year 0) are not cursors this service issued: 422, not a 500."""
    number = (await issue_card(client, operator))["card_number"]
    for raw in [
        "0001-01-01T00:00:00+14:00|0190d7a4-7c5e-7000-8000-000000000000",
        "9999-12-31T23:59:59-14:00|0190d7a4-7c5e-7000-8000-000000000000",
    ]:
        response = await client.get(
            f"/v1/cards/{number}/transactions", params={"cursor": _b64(raw)}, headers=operator
        )
        assert response.status_code == 422, (raw, response.text)
        assert_problem(response, 422, "invalid_cursor")


async def test_invalid_limit_is_422(client: AsyncClient, operator: dict[str, str]) -> None:
    number = (await issue_card(client, operator))["card_number"]
    for limit in [0, -1, 201, "ten"]:
        response = await client.get(
            f"/v1/cards/{number}/transactions", params={"limit": limit}, headers=operator
        )
        assert response.status_code == 422, (limit, response.text)
        assert_problem(response, 422, "validation_error")


async def test_history_of_unknown_card_is_404(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    response = await client.get("/v1/cards/79927398713/transactions", headers=operator)
    assert_problem(response, 404, "card_not_found")


def _sums(entries: list[dict[str, Any]]) -> dict[str, int]:
    sums: dict[str, int] = defaultdict(int)
    for entry in entries:
        sums[entry["asset"]] += entry["amount"]
    return dict(sums)


async def test_transaction_of_a_purchase_shows_balanced_entries(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    number = (await issue_card(client, operator))["card_number"]
    tx_id = await purchase(client, till, number, "R-1", 12_345)  # 123 points, 617 cents

    response = await client.get(f"/v1/transactions/{tx_id}", headers=till)
    assert response.status_code == 200, response.text
    tx = response.json()
    assert tx["id"] == tx_id
    assert tx["type"] == "accrual"
    assert tx["card_number"] == number
    assert tx["partner_id"] == partner["id"]
    assert tx["reference"] == "R-1"
    assert tx["purchase_amount"] == 12_345
    assert tx["currency"] == "EUR"
    assert tx["corrects_id"] is None

    entries = tx["entries"]
    assert _sums(entries) == {"points": 0, "cashback": 0}
    legs = {(e["account_kind"], e["asset"]): e for e in entries}
    assert len(legs) == len(entries) == 4
    assert legs[("card", "points")]["amount"] == 123
    assert legs[("card", "cashback")]["amount"] == 617
    assert legs[("partner_issued", "points")]["amount"] == -123
    assert legs[("partner_issued", "cashback")]["amount"] == -617
    for e in entries:
        if e["account_kind"] == "card":
            assert (e["card_number"], e["partner_id"]) == (number, None)
        else:
            assert (e["card_number"], e["partner_id"]) == (None, partner["id"])


async def test_transaction_of_a_redemption_at_a_partner(
    app: FastAPI, client: AsyncClient, operator: dict[str, str]
) -> None:
    _, till = await partner_with_key(app, client, operator)
    number = (await issue_card(client, operator))["card_number"]
    await purchase(client, till, number, "R-1", 10_000)  # 100 points, 500 cents
    for asset in ("points", "cashback"):
        tx_id = await redeem(client, till, number, f"R-{asset}", asset=asset, amount=42)
        tx = (await client.get(f"/v1/transactions/{tx_id}", headers=operator)).json()
        assert tx["type"] == "redemption"
        assert _sums(tx["entries"]) == {asset: 0}
        legs = sorted((e["account_kind"], e["asset"], e["amount"]) for e in tx["entries"])
        assert legs == [("card", asset, -42), ("partner_redeemed", asset, 42)]


async def test_transaction_of_operator_award_and_redemption(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    number = (await funded_card(client, operator, 50))["card_number"]
    history = (await client.get(f"/v1/cards/{number}/transactions", headers=operator)).json()
    award_id = history["items"][0]["id"]
    tx = (await client.get(f"/v1/transactions/{award_id}", headers=operator)).json()
    assert tx["type"] == "award"
    assert tx["partner_id"] is None
    assert tx["description"] == "test funding"
    assert tx["purchase_amount"] is None
    assert tx["currency"] is None
    legs = sorted((e["account_kind"], e["asset"], e["amount"]) for e in tx["entries"])
    assert legs == [("card", "points", 50), ("operator_issued", "points", -50)]

    redemption_id = await redeem(client, operator, number, "R-1", asset="points", amount=20)
    tx = (await client.get(f"/v1/transactions/{redemption_id}", headers=operator)).json()
    legs = sorted((e["account_kind"], e["asset"], e["amount"]) for e in tx["entries"])
    assert legs == [("card", "points", -20), ("operator_redeemed", "points", 20)]
    operator_leg = next(e for e in tx["entries"] if e["account_kind"] == "operator_redeemed")
    assert (operator_leg["card_number"], operator_leg["partner_id"]) == (None, None)


async def test_unknown_transaction_is_404(client: AsyncClient, operator: dict[str, str]) -> None:
    response = await client.get(
        "/v1/transactions/0190d7a4-7c5e-7000-8000-000000000000", headers=operator
    )
    assert_problem(response, 404, "transaction_not_found")
    response = await client.get("/v1/transactions/nope", headers=operator)
    assert_problem(response, 422, "validation_error")


async def test_refused_redemption_leaves_no_history(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    number = (await funded_card(client, operator, 10))["card_number"]
    response = await client.post(
        "/v1/redemptions",
        json={"card_number": number, "asset": "points", "amount": 11, "reference": "R-1"},
        headers={**operator, **idem()},
    )
    body = assert_problem(response, 422, "insufficient_balance")
    assert (body["available"], body["requested"]) == (10, 11)
    history = (await client.get(f"/v1/cards/{number}/transactions", headers=operator)).json()
    assert [i["type"] for i in history["items"]] == ["award"]
    balance = (await client.get(f"/v1/cards/{number}/balance", headers=operator)).json()
    assert balance["points"] == 10

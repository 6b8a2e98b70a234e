"""Holds over HTTP: reserve value on a card for an order, then capture it (in part or in full) or
void it. What the answers say, what the balance and the history show, what the ledger's entries
hold, the refusals with their stable codes, and Idempotency-Key replays.

The helpers at the top are shared with the other hold tests (races, expiry, bad input)."""

import uuid
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cards.numbers import luhn_check_digit
from tests.conftest import idem
from tests.factories.api_keys import bearer, insert_api_key
from tests.factories.cards import funded_card, issue_card
from tests.factories.partners import create_partner, partner_with_key
from tests.ledger.helpers_ledger import check_books, system_account_totals

PROBLEM_JSON = "application/problem+json"

# --------------------------------------------------------------------------------------------
# Shared helpers


def new_reference() -> str:
    return f"O-{uuid.uuid4().hex[:16]}"


async def place_hold(
    client: AsyncClient,
    headers: dict[str, str],
    card: str,
    amount: int,
    *,
    asset: str = "points",
    reference: str | None = None,
    key: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body = {
        "card_number": card,
        "asset": asset,
        "amount": amount,
        "reference": reference or new_reference(),
        **extra,
    }
    return await client.post("/v1/holds", json=body, headers={**headers, **(key or idem())})


async def open_hold(
    client: AsyncClient, headers: dict[str, str], card: str, amount: int, **options: Any
) -> dict[str, Any]:
    r = await place_hold(client, headers, card, amount, **options)
    assert r.status_code == 201, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def capture_hold(
    client: AsyncClient,
    headers: dict[str, str],
    hold_id: str,
    amount: int | None = None,
    *,
    reason: str | None = None,
    key: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {}
    if amount is not None:
        body["amount"] = amount
    if reason is not None:
        body["reason"] = reason
    return await client.post(
        f"/v1/holds/{hold_id}/capture", json=body, headers={**headers, **(key or idem())}
    )


async def void_hold(
    client: AsyncClient,
    headers: dict[str, str],
    hold_id: str,
    *,
    reason: str | None = None,
    key: dict[str, str] | None = None,
) -> Response:
    body = {} if reason is None else {"reason": reason}
    return await client.post(
        f"/v1/holds/{hold_id}/void", json=body, headers={**headers, **(key or idem())}
    )


def problem(response: Response, status: int, code: str) -> dict[str, Any]:
    """Assert a problem+json answer with this status and code; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    return body


async def card_balance(client: AsyncClient, headers: dict[str, str], card: str) -> dict[str, Any]:
    r = await client.get(f"/v1/cards/{card}/balance", headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def amounts(points: int, cashback: int = 0) -> dict[str, int]:
    return {"points": points, "cashback": cashback}


async def assert_balance(
    client: AsyncClient,
    headers: dict[str, str],
    card: str,
    *,
    available: dict[str, int],
    held: dict[str, int],
) -> None:
    body = await card_balance(client, headers, card)
    assert {"points": body["points"], "cashback": body["cashback"]} == available, body
    assert body["held"] == held, body
    assert body["total"] == {a: available[a] + held[a] for a in available}, body
    assert body["debt"] == amounts(0), body


async def history(
    client: AsyncClient, headers: dict[str, str], card: str
) -> list[tuple[str, int, int, str | None]]:
    """(type, points, cashback, description) of the card's transactions, newest first."""
    r = await client.get(f"/v1/cards/{card}/transactions", headers=headers)
    assert r.status_code == 200, r.text
    return [(i["type"], i["points"], i["cashback"], i["description"]) for i in r.json()["items"]]


async def lapse(engine: AsyncEngine, hold_id: str) -> None:
    """Make the hold's time to live run out now (the holds table is mutable)."""
    async with engine.begin() as conn:
        result = await conn.execute(
            text("UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": uuid.UUID(hold_id)},
        )
        assert result.rowcount == 1


async def account_row(engine: AsyncEngine, card: str, asset: str = "points") -> tuple[int, int]:
    """(balance, held) of the card's account, as stored."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT a.balance, a.held FROM accounts a JOIN cards c ON c.id = a.card_id"
                    " WHERE c.card_number = :n AND a.asset = :asset"
                ),
                {"n": card, "asset": asset},
            )
        ).one()
    return int(row.balance), int(row.held)


# A card account's `held` is the sum of its open holds (lapsed but unreleased ones included).
_HELD_DRIFT = text("""
    SELECT a.id, a.held, coalesce(sum(h.amount) FILTER (WHERE h.status = 'open'), 0) AS open
    FROM accounts a LEFT JOIN holds h ON h.account_id = a.id
    WHERE a.kind = 'card'
    GROUP BY a.id
    HAVING a.held <> coalesce(sum(h.amount) FILTER (WHERE h.status = 'open'), 0)
""")

# Per asset: what the operator_held accounts hold, and what the open holds reserve.
_HELD_ACCOUNTS = text("""
    SELECT a.asset, coalesce(sum(e.amount), 0) AS total
    FROM accounts a LEFT JOIN entries e ON e.account_id = a.id
    WHERE a.kind = 'operator_held' GROUP BY a.asset
""")
_OPEN_HOLDS = text(
    "SELECT asset, sum(amount) AS total FROM holds WHERE status = 'open' GROUP BY asset"
)

# Per hold: its hold transaction took `amount` into operator_held; what its capture and release
# took out again; how many captures and releases it has.
_HOLD_LEGS = text("""
    SELECT h.id, h.status, h.amount, h.captured_amount, h.settled_by,
           (SELECT sum(e.amount) FROM entries e JOIN accounts a ON a.id = e.account_id
            WHERE e.transaction_id = h.id AND a.kind = 'operator_held') AS reserved,
           coalesce((SELECT sum(e.amount) FROM transactions t
                     JOIN entries e ON e.transaction_id = t.id
                     JOIN accounts a ON a.id = e.account_id AND a.kind = 'operator_held'
                     WHERE t.corrects_id = h.id), 0) AS taken_out,
           (SELECT count(*) FROM transactions t
            WHERE t.corrects_id = h.id AND t.type = 'capture') AS captures,
           (SELECT count(*) FROM transactions t
            WHERE t.corrects_id = h.id AND t.type = 'release') AS releases,
           (SELECT coalesce(-sum(e.amount), 0) FROM transactions t
            JOIN entries e ON e.transaction_id = t.id
            JOIN accounts a ON a.id = e.account_id AND a.kind = 'operator_held'
            WHERE t.corrects_id = h.id AND t.type = 'capture') AS captured_entries
    FROM holds h
""")


async def check_holds(engine: AsyncEngine) -> int:
    """Assert the holds agree with the ledger; return how many holds there are."""
    async with engine.connect() as conn:
        drift = [tuple(r) for r in await conn.execute(_HELD_DRIFT)]
        held_accounts = {r.asset: int(r.total) for r in await conn.execute(_HELD_ACCOUNTS)}
        open_holds = {r.asset: int(r.total) for r in await conn.execute(_OPEN_HOLDS)}
        legs = list(await conn.execute(_HOLD_LEGS))
    assert drift == [], f"card accounts whose held differs from their open holds: {drift}"
    assert held_accounts == {
        "points": open_holds.get("points", 0),
        "cashback": open_holds.get("cashback", 0),
    }, (held_accounts, open_holds)
    for h in legs:
        assert h.reserved == h.amount, h
        if h.status == "open":
            assert (h.taken_out, h.captures, h.releases, h.settled_by) == (0, 0, 0, None), h
        else:
            assert h.taken_out == -h.amount, f"hold settled but not all taken out: {h}"
            assert h.settled_by is not None, h
        if h.status == "captured":
            assert h.captures == 1 and h.captured_entries == h.captured_amount, h
            assert h.releases == (0 if h.captured_amount == h.amount else 1), h
        elif h.status in ("voided", "expired"):
            assert (h.captures, h.releases) == (0, 1), h
    return len(legs)


async def books_ok(client: AsyncClient, operator: dict[str, str], engine: AsyncEngine) -> None:
    """The audit, the double-entry checks and the holds' own checks all pass."""
    audit = await client.get("/v1/audit", headers=operator)
    assert audit.status_code == 200, audit.text
    assert audit.json()["ok"] is True, audit.text
    await check_books(engine)
    await check_holds(engine)


async def ledger_state(engine: AsyncEngine) -> tuple[Any, ...]:
    """Everything a refused request must leave alone."""
    async with engine.connect() as conn:
        counts = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM transactions), (SELECT count(*) FROM entries),"
                    " (SELECT count(*) FROM holds)"
                )
            )
        ).one()
        accounts = (
            await conn.execute(
                text("SELECT id, balance, held FROM accounts WHERE kind = 'card' ORDER BY id")
            )
        ).all()
        holds = (
            await conn.execute(
                text("SELECT id, status, captured_amount, expires_at FROM holds ORDER BY id")
            )
        ).all()
    return tuple(counts), [tuple(a) for a in accounts], [tuple(h) for h in holds]


async def held_totals(engine: AsyncEngine) -> dict[tuple[str, uuid.UUID | None, str], int]:
    """The system accounts with a non-zero total: (kind, partner_id, asset) -> sum of entries."""
    return {k: v for k, v in (await system_account_totals(engine)).items() if v}


# --------------------------------------------------------------------------------------------
# Happy paths


async def test_hold_reserves_value_outside_the_available_balance(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]

    r = await place_hold(client, till, card, 30, reference="ORDER-1")
    assert r.status_code == 201, r.text
    answer = r.json()
    assert {k: v for k, v in answer.items() if k not in ("id", "expires_at", "created_at")} == {
        "card_number": card,
        "partner_id": partner["id"],
        "asset": "points",
        "amount": 30,
        "reference": "ORDER-1",
        "status": "open",
        "captured_amount": None,
        "settled_at": None,
        "settled_by": None,
        "released": 0,
        "balance": amounts(70),
    }
    created = datetime.fromisoformat(answer["created_at"])
    expires = datetime.fromisoformat(answer["expires_at"])
    assert expires - created == timedelta(seconds=900)  # the default time to live

    await assert_balance(client, till, card, available=amounts(70), held=amounts(30))
    assert await account_row(engine, card) == (70, 30)
    assert await history(client, operator, card) == [
        ("hold", -30, 0, None),
        ("award", 100, 0, "test funding"),
    ]
    assert (await held_totals(engine))[("operator_held", None, "points")] == 30

    # The hold's transaction is the hold's id: card -30, operator_held +30.
    tx = (await client.get(f"/v1/transactions/{answer['id']}", headers=operator)).json()
    assert tx["type"] == "hold" and tx["reference"] == "ORDER-1"
    assert sorted((e["account_kind"], e["amount"]) for e in tx["entries"]) == [
        ("card", -30),
        ("operator_held", 30),
    ]

    read = await client.get(f"/v1/holds/{answer['id']}", headers=till)
    assert read.status_code == 200, read.text
    assert read.json() == {k: v for k, v in answer.items() if k not in ("released", "balance")}
    await books_ok(client, operator, engine)


async def test_partial_capture_spends_part_and_releases_the_rest(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    hold = await open_hold(client, till, card, 30, ttl_seconds=60)

    r = await capture_hold(client, till, hold["id"], 18, reason="order shipped in part")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["id"] == hold["id"]
    assert (answer["status"], answer["captured_amount"], answer["released"]) == ("captured", 18, 12)
    assert answer["balance"] == amounts(82)
    assert answer["settled_at"] is not None and answer["settled_by"] is not None
    assert (answer["amount"], answer["reference"]) == (30, hold["reference"])

    await assert_balance(client, till, card, available=amounts(82), held=amounts(0))
    assert await account_row(engine, card) == (82, 0)
    items = await history(client, operator, card)
    # The capture and the release share one database transaction (and posted_at): either order.
    assert sorted(items[:2]) == [
        ("capture", 0, 0, "order shipped in part"),
        ("release", 12, 0, "rest of the hold"),
    ]
    assert items[2:] == [("hold", -30, 0, None), ("award", 100, 0, "test funding")]

    # The capture is what ended the hold: the partner's redeemed account got 18.
    capture = (await client.get(f"/v1/transactions/{answer['settled_by']}", headers=till)).json()
    assert (capture["type"], capture["corrects_id"]) == ("capture", hold["id"])
    assert sorted(
        (e["account_kind"], e["partner_id"], e["amount"]) for e in capture["entries"]
    ) == [
        ("operator_held", None, -18),
        ("partner_redeemed", partner["id"], 18),
    ]
    totals = await held_totals(engine)
    assert totals[("partner_redeemed", uuid.UUID(partner["id"]), "points")] == 18
    assert ("operator_held", None, "points") not in totals  # nothing left on hold

    read = (await client.get(f"/v1/holds/{hold['id']}", headers=till)).json()
    assert (read["status"], read["captured_amount"], read["settled_by"]) == (
        "captured",
        18,
        answer["settled_by"],
    )
    await books_ok(client, operator, engine)


async def test_capture_without_an_amount_takes_the_whole_hold(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    hold = await open_hold(client, till, card, 30)

    r = await capture_hold(client, till, hold["id"])
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["status"], answer["captured_amount"], answer["released"]) == ("captured", 30, 0)
    assert answer["balance"] == amounts(70)
    await assert_balance(client, till, card, available=amounts(70), held=amounts(0))
    # No release: nothing was left over.
    assert [h[:3] for h in await history(client, operator, card)] == [
        ("capture", 0, 0),
        ("hold", -30, 0),
        ("award", 100, 0),
    ]
    assert (await held_totals(engine))[
        ("partner_redeemed", uuid.UUID(partner["id"]), "points")
    ] == 30

    # Capturing exactly the hold's amount is the same as capturing all of it.
    second = await open_hold(client, till, card, 20)
    r = await capture_hold(client, till, second["id"], 20)
    assert r.status_code == 200, r.text
    assert (r.json()["captured_amount"], r.json()["released"]) == (20, 0)
    assert r.json()["balance"] == amounts(50)
    await books_ok(client, operator, engine)


async def test_void_gives_everything_back(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    first = await open_hold(client, till, card, 30)
    second = await open_hold(client, till, card, 25)
    await assert_balance(client, till, card, available=amounts(45), held=amounts(55))

    r = await void_hold(client, till, first["id"], reason="basket abandoned")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["status"], answer["captured_amount"], answer["released"]) == ("voided", None, 30)
    assert answer["balance"] == amounts(75)
    await assert_balance(client, till, card, available=amounts(75), held=amounts(25))

    r = await void_hold(client, till, second["id"])
    assert r.status_code == 200, r.text
    assert (r.json()["released"], r.json()["balance"]) == (25, amounts(100))
    await assert_balance(client, till, card, available=amounts(100), held=amounts(0))
    assert await account_row(engine, card) == (100, 0)

    assert await history(client, operator, card) == [
        ("release", 25, 0, "hold voided"),
        ("release", 30, 0, "basket abandoned"),
        ("hold", -25, 0, None),
        ("hold", -30, 0, None),
        ("award", 100, 0, "test funding"),
    ]
    release = (await client.get(f"/v1/transactions/{answer['settled_by']}", headers=till)).json()
    assert (release["type"], release["corrects_id"]) == ("release", first["id"])
    assert sorted((e["account_kind"], e["amount"]) for e in release["entries"]) == [
        ("card", 30),
        ("operator_held", -30),
    ]
    # Nothing was spent anywhere.
    assert not [k for k in await held_totals(engine) if k[0] == "partner_redeemed"]
    await books_ok(client, operator, engine)


async def test_cashback_holds(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    card = (await issue_card(client, operator))["card_number"]
    purchase = {
        "kind": "purchase",
        "card_number": card,
        "amount": 10_000,  # 100 points, 500 cashback
        "currency": "EUR",
        "reference": "R-1",
    }
    assert (await client.post("/v1/accruals", json=purchase, headers={**till, **idem()})).is_success

    hold = await open_hold(client, till, card, 200, asset="cashback")
    assert (hold["asset"], hold["balance"]) == ("cashback", amounts(100, 300))
    await assert_balance(client, till, card, available=amounts(100, 300), held=amounts(0, 200))
    assert await account_row(engine, card, "cashback") == (300, 200)
    assert await account_row(engine, card, "points") == (100, 0)

    # More cashback than is available is refused, though the card has points enough.
    r = await place_hold(client, till, card, 301, asset="cashback")
    body = problem(r, 422, "insufficient_balance")
    assert (body["asset"], body["available"], body["requested"]) == ("cashback", 300, 301)

    r = await capture_hold(client, till, hold["id"], 150)
    assert r.status_code == 200, r.text
    assert (r.json()["captured_amount"], r.json()["released"]) == (150, 50)
    assert r.json()["balance"] == amounts(100, 350)
    await assert_balance(client, till, card, available=amounts(100, 350), held=amounts(0, 0))
    assert (await held_totals(engine))[
        ("partner_redeemed", uuid.UUID(partner["id"]), "cashback")
    ] == 150
    items = [h[:3] for h in await history(client, operator, card)]
    assert sorted(items[:2]) == [("capture", 0, 0), ("release", 0, 50)]
    assert items[2:] == [("hold", 0, -200), ("accrual", 100, 500)]
    await books_ok(client, operator, engine)


async def test_operator_holds_for_its_own_rewards_or_for_a_named_partner(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner = await create_partner(client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]

    own = await open_hold(client, operator, card, 40)
    assert own["partner_id"] is None
    r = await capture_hold(client, operator, own["id"], 25)
    assert r.status_code == 200, r.text
    assert (r.json()["captured_amount"], r.json()["released"]) == (25, 15)
    capture = await client.get(f"/v1/transactions/{r.json()['settled_by']}", headers=operator)
    assert sorted((e["account_kind"], e["amount"]) for e in capture.json()["entries"]) == [
        ("operator_held", -25),
        ("operator_redeemed", 25),
    ]

    named = await open_hold(client, operator, card, 10, partner_id=partner["id"])
    assert named["partner_id"] == partner["id"]
    r = await capture_hold(client, operator, named["id"])
    assert r.status_code == 200, r.text
    assert r.json()["balance"] == amounts(65)

    assert await held_totals(engine) == {
        ("operator_issued", None, "points"): -100,
        ("operator_redeemed", None, "points"): 25,
        ("partner_redeemed", uuid.UUID(partner["id"]), "points"): 10,
    }
    await assert_balance(client, operator, card, available=amounts(65), held=amounts(0))
    await books_ok(client, operator, engine)


async def test_a_partner_key_may_name_its_own_partner(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 10))["card_number"]
    hold = await open_hold(client, till, card, 10, partner_id=partner["id"])
    assert (hold["partner_id"], hold["balance"]) == (partner["id"], amounts(0))
    await books_ok(client, operator, engine)


# --------------------------------------------------------------------------------------------
# What a hold reserves is reserved


async def test_held_value_can_be_neither_redeemed_nor_held_again(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    hold = await open_hold(client, till, card, 80)

    spend = {"card_number": card, "asset": "points", "amount": 30, "reference": "R-1"}
    r = await client.post("/v1/redemptions", json=spend, headers={**till, **idem()})
    problem(r, 422, "insufficient_balance")

    r = await place_hold(client, till, card, 21)
    body = problem(r, 422, "insufficient_balance")
    assert (body["asset"], body["available"], body["requested"]) == ("points", 20, 21)

    # Exactly what is left can still be held.
    rest = await open_hold(client, till, card, 20)
    assert rest["balance"] == amounts(0)
    r = await place_hold(client, till, card, 1)
    assert problem(r, 422, "insufficient_balance")["available"] == 0
    await assert_balance(client, till, card, available=amounts(0), held=amounts(100))

    # Once the hold is voided, its value can be spent.
    assert (await void_hold(client, till, hold["id"])).status_code == 200
    spend["amount"], spend["reference"] = 80, "R-2"
    r = await client.post("/v1/redemptions", json=spend, headers={**till, **idem()})
    assert r.status_code == 201, r.text
    assert r.json()["balance"] == amounts(0)
    await assert_balance(client, till, card, available=amounts(0), held=amounts(20))
    await books_ok(client, operator, engine)


# --------------------------------------------------------------------------------------------
# Refusals


async def test_create_refusals(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    other, other_till = await partner_with_key(app, client, operator)
    no_redeem, no_redeem_till = await partner_with_key(app, client, operator, can_redeem=False)
    card = (await funded_card(client, operator, 100))["card_number"]
    blocked = (await funded_card(client, operator, 100))["card_number"]
    assert (await client.post(f"/v1/cards/{blocked}/block", headers=operator)).status_code == 200
    closed = (await issue_card(client, operator))["card_number"]
    assert (await client.post(f"/v1/cards/{closed}/close", headers=operator)).status_code == 200
    unknown = "9" + card[1:-1]
    unknown += luhn_check_digit(unknown)  # valid, but never issued
    await open_hold(client, till, card, 10, reference="ORDER-1")
    before = await ledger_state(engine)

    problem(await place_hold(client, till, unknown, 5), 404, "card_not_found")
    problem(await place_hold(client, till, blocked, 5), 409, "card_blocked")
    problem(await place_hold(client, till, closed, 5), 409, "card_closed")
    problem(
        await place_hold(client, operator, card, 5, partner_id=str(uuid.uuid4())),
        404,
        "partner_not_found",
    )
    problem(await place_hold(client, no_redeem_till, card, 5), 409, "partner_cannot_redeem")
    problem(
        await place_hold(client, operator, card, 5, partner_id=no_redeem["id"]),
        409,
        "partner_cannot_redeem",
    )
    problem(await place_hold(client, till, card, 5, partner_id=other["id"]), 403, "forbidden")
    # One hold per order and partner, on whichever card.
    problem(
        await place_hold(client, till, card, 5, reference="ORDER-1"), 409, "duplicate_reference"
    )
    problem(await place_hold(client, till, card, 91), 422, "insufficient_balance")
    r = await client.post(
        "/v1/holds",
        json={"card_number": card, "asset": "points", "amount": 5, "reference": "X"},
        headers={"Authorization": "Bearer nope", **idem()},
    )
    problem(r, 401, "unauthorized")
    r = await client.post(
        "/v1/holds",
        json={"card_number": card, "asset": "points", "amount": 5, "reference": "X"},
        headers=idem(),
    )
    problem(r, 401, "unauthorized")
    assert await ledger_state(engine) == before

    # The same order number is another partner's own, and the operator's.
    assert (await place_hold(client, other_till, card, 5, reference="ORDER-1")).status_code == 201
    assert (await place_hold(client, operator, card, 5, reference="ORDER-1")).status_code == 201
    problem(
        await place_hold(client, operator, card, 5, reference="ORDER-1"), 409, "duplicate_reference"
    )
    await books_ok(client, operator, engine)


async def test_duplicate_reference_on_another_card_is_refused(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    first = (await funded_card(client, operator, 100))["card_number"]
    second = (await funded_card(client, operator, 100))["card_number"]
    await open_hold(client, till, first, 10, reference="ORDER-9")
    problem(
        await place_hold(client, till, second, 10, reference="ORDER-9"), 409, "duplicate_reference"
    )
    # Even once the first hold ended, the order number stays used.
    hold_id = (await client.get(f"/v1/cards/{first}/transactions", headers=till)).json()["items"][
        0
    ]["id"]
    assert (await void_hold(client, till, hold_id)).status_code == 200
    problem(
        await place_hold(client, till, second, 10, reference="ORDER-9"), 409, "duplicate_reference"
    )
    await assert_balance(client, till, second, available=amounts(100), held=amounts(0))
    await books_ok(client, operator, engine)


async def test_settle_refusals(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    captured = await open_hold(client, till, card, 30)
    voided = await open_hold(client, till, card, 20)
    missing = str(uuid.uuid4())

    body = problem(
        await capture_hold(client, till, captured["id"], 31), 422, "capture_exceeds_hold"
    )
    assert (body["held"], body["requested"]) == (30, 31)

    settled = await capture_hold(client, till, captured["id"], 10)
    assert settled.status_code == 200, settled.text
    capture_id = settled.json()["settled_by"]
    voiding = await void_hold(client, till, voided["id"])
    assert voiding.status_code == 200, voiding.text
    release_id = voiding.json()["settled_by"]
    before = await ledger_state(engine)

    for r in (
        await capture_hold(client, till, captured["id"]),
        await capture_hold(client, till, captured["id"], 5),
        await void_hold(client, till, captured["id"]),
    ):
        body = problem(r, 409, "hold_not_open")
        assert (body["hold_status"], body["settled_by"]) == ("captured", capture_id)
    for r in (
        await capture_hold(client, till, voided["id"]),
        await void_hold(client, till, voided["id"]),
    ):
        body = problem(r, 409, "hold_not_open")
        assert (body["hold_status"], body["settled_by"]) == ("voided", release_id)

    problem(await client.get(f"/v1/holds/{missing}", headers=till), 404, "hold_not_found")
    problem(await capture_hold(client, till, missing), 404, "hold_not_found")
    problem(await void_hold(client, till, missing), 404, "hold_not_found")
    r = await client.post(f"/v1/holds/{captured['id']}/void", json={}, headers=idem())
    problem(r, 401, "unauthorized")
    problem(await client.get(f"/v1/holds/{captured['id']}"), 401, "unauthorized")

    assert await ledger_state(engine) == before
    await assert_balance(client, till, card, available=amounts(90), held=amounts(0))
    await books_ok(client, operator, engine)


async def test_another_partner_cannot_see_or_settle_a_hold(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    _, other_till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    hold = await open_hold(client, till, card, 30)
    before = await ledger_state(engine)

    problem(await client.get(f"/v1/holds/{hold['id']}", headers=other_till), 404, "hold_not_found")
    problem(await capture_hold(client, other_till, hold["id"]), 404, "hold_not_found")
    problem(await void_hold(client, other_till, hold["id"]), 404, "hold_not_found")
    # Nor the operator's own holds.
    own = await open_hold(client, operator, card, 5)
    before = await ledger_state(engine)
    problem(await client.get(f"/v1/holds/{own['id']}", headers=till), 404, "hold_not_found")
    problem(await capture_hold(client, till, own["id"]), 404, "hold_not_found")
    problem(await void_hold(client, till, own["id"]), 404, "hold_not_found")
    assert await ledger_state(engine) == before

    # The operator sees every hold; the owner can still settle it.
    assert (await client.get(f"/v1/holds/{hold['id']}", headers=operator)).json()[
        "status"
    ] == "open"
    r = await capture_hold(client, till, hold["id"])
    assert r.status_code == 200, r.text
    await books_ok(client, operator, engine)


async def test_a_revoked_partner_key_is_unauthorized(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner = await create_partner(client, operator)
    key = await insert_api_key(app, role="partner", partner_id=partner["id"])
    till = bearer(key)
    card = (await funded_card(client, operator, 100))["card_number"]
    hold = await open_hold(client, till, card, 30)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE api_keys SET revoked_at = now() WHERE role = 'partner'"))
    problem(await capture_hold(client, till, hold["id"]), 401, "unauthorized")
    problem(await place_hold(client, till, card, 5), 401, "unauthorized")
    await assert_balance(client, operator, card, available=amounts(70), held=amounts(30))
    await books_ok(client, operator, engine)


# --------------------------------------------------------------------------------------------
# Idempotency


async def test_a_replayed_hold_returns_the_first_answer_and_posts_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 100))["card_number"]
    key = idem()

    first = await place_hold(client, till, card, 30, reference="ORDER-1", key=key)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    state = await ledger_state(engine)

    again = await place_hold(client, till, card, 30, reference="ORDER-1", key=key)
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert await ledger_state(engine) == state
    await assert_balance(client, till, card, available=amounts(70), held=amounts(30))

    # The same key with another body is refused, and posts nothing either.
    other = await place_hold(client, till, card, 31, reference="ORDER-1", key=key)
    problem(other, 422, "idempotency_key_reused")
    assert await ledger_state(engine) == state

    # Capture and void replay too: a retried capture does not meet "hold_not_open".
    capture_key = idem()
    captured = await capture_hold(client, till, first.json()["id"], 10, key=capture_key)
    assert captured.status_code == 200, captured.text
    state = await ledger_state(engine)
    replayed = await capture_hold(client, till, first.json()["id"], 10, key=capture_key)
    assert replayed.status_code == 200, replayed.text
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json() == captured.json()
    problem(
        await capture_hold(client, till, first.json()["id"], 11, key=capture_key),
        422,
        "idempotency_key_reused",
    )
    # The same key on another hold's path is another request.
    other_hold = await open_hold(client, till, card, 5)
    state = await ledger_state(engine)
    problem(
        await capture_hold(client, till, other_hold["id"], 10, key=capture_key),
        422,
        "idempotency_key_reused",
    )
    assert await ledger_state(engine) == state

    void_key = idem()
    voided = await void_hold(client, till, other_hold["id"], key=void_key)
    assert voided.status_code == 200, voided.text
    replayed = await void_hold(client, till, other_hold["id"], key=void_key)
    assert (replayed.status_code, replayed.json()) == (200, voided.json())
    assert replayed.headers["Idempotent-Replayed"] == "true"
    await assert_balance(client, till, card, available=amounts(90), held=amounts(0))
    await books_ok(client, operator, engine)


async def test_a_refusal_is_replayed_too(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """A retry never flips an outcome: a refused hold stays refused under its key, even once
    the card could afford it."""
    _, till = await partner_with_key(app, client, operator)
    card = (await funded_card(client, operator, 10))["card_number"]
    key = idem()
    problem(
        await place_hold(client, till, card, 30, reference="ORDER-1", key=key),
        422,
        "insufficient_balance",
    )
    award = {"kind": "award", "card_number": card, "points": 100, "reason": "top up"}
    assert (
        await client.post("/v1/accruals", json=award, headers={**operator, **idem()})
    ).is_success

    again = await place_hold(client, till, card, 30, reference="ORDER-1", key=key)
    problem(again, 422, "insufficient_balance")
    assert again.headers["Idempotent-Replayed"] == "true"
    # Under a new key the same order holds.
    assert (await place_hold(client, till, card, 30, reference="ORDER-1")).status_code == 201
    await assert_balance(client, till, card, available=amounts(80), held=amounts(30))
    await books_ok(client, operator, engine)

"""Races on real PostgreSQL: many requests gathered at once run as concurrent transactions on
separate pooled connections. No mocks; every assertion is exact."""

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.factories.api_keys import bearer, insert_api_key
from tests.factories.cards import funded_card, issue_card
from tests.factories.partners import partner_with_key
from tests.factories.postings import purchase, redeem
from tests.ledger.helpers_ledger import (
    api_balance,
    card_accounts,
    check_books,
    count_card_transactions,
    scalar,
    system_account_totals,
)

pytestmark = pytest.mark.concurrency


# 1. Many redemptions race for one balance ------------------------------------------------------


async def test_concurrent_redemptions_never_overdraw(
    client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    card = await funded_card(client, operator, 100)
    number = card["card_number"]

    responses: list[Response] = await asyncio.gather(
        *(redeem(client, operator, number, 10, f"race-{i}") for i in range(50))
    )

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 10, 422: 40}, [r.text for r in responses if r.status_code >= 500]
    refused = [r.json() for r in responses if r.status_code == 422]
    assert {p["code"] for p in refused} == {"insufficient_balance"}
    assert {(p["asset"], p["requested"]) for p in refused} == {("points", 10)}
    # The ten that went through saw the balance step down 90, 80, ..., 0: one at a time.
    accepted = [r.json() for r in responses if r.status_code == 201]
    assert sorted(b["balance"]["points"] for b in accepted) == list(range(0, 100, 10))

    assert await api_balance(client, operator, number) == (0, 0)
    accounts = await card_accounts(engine, number)
    assert accounts["points"].balance == 0
    assert accounts["points"].entries_total == accounts["points"].balance
    assert accounts["points"].entry_count == 11  # the award and ten redemptions
    assert await count_card_transactions(engine, number, "redemption") == 10
    # Every refused request left nothing behind.
    refused_refs = sorted(f"race-{i}" for i, r in enumerate(responses) if r.status_code == 422)
    assert (
        await scalar(
            engine,
            "SELECT count(*) FROM transactions WHERE reference = ANY(:refs)",
            refs=refused_refs,
        )
        == 0
    )
    await check_books(engine)


async def test_refusal_under_contention_reports_the_current_balance(
    client: AsyncClient, operator: dict[str, str]
) -> None:
    """A redemption refused after waiting for a concurrent one must say what the card holds
    now. With 100 points and 10-point redemptions the balance is always a multiple of 10, so
    any refusal of 10 points can only have seen 0 available."""
    card = await funded_card(client, operator, 100)
    number = card["card_number"]

    responses: list[Response] = await asyncio.gather(
        *(redeem(client, operator, number, 10, f"avail-{i}") for i in range(50))
    )

    refused = [r.json() for r in responses if r.status_code == 422]
    assert len(refused) == 40
    available = Counter(p["available"] for p in refused)
    assert available == {0: 40}, (
        f"refusals reported these available balances: {dict(available)}; e.g. "
        f"{next((p['detail'] for p in refused if p['available'] != 0), None)!r}"
    )


# 2. One Idempotency-Key sent twenty times at once ---------------------------------------------


@pytest.mark.parametrize("endpoint", ["redemption", "accrual"])
async def test_same_idempotency_key_concurrently_posts_once(
    app: FastAPI,
    client: AsyncClient,
    operator: dict[str, str],
    engine: AsyncEngine,
    endpoint: str,
) -> None:
    _, till = await partner_with_key(app, client, operator)
    card = await funded_card(client, operator, 100)
    number = card["card_number"]
    if endpoint == "redemption":
        path = "/v1/redemptions"
        body: dict[str, Any] = {
            "card_number": number,
            "asset": "points",
            "amount": 10,
            "reference": "same-key",
        }
        type_ = "redemption"
    else:
        path = "/v1/accruals"
        body = {
            "kind": "purchase",
            "card_number": number,
            "amount": 2_550,
            "currency": "EUR",
            "reference": "same-key",
        }
        type_ = "accrual"
    headers = {**till, "Idempotency-Key": f"idem-{uuid.uuid4()}"}

    responses: list[Response] = await asyncio.gather(
        *(client.post(path, json=body, headers=headers) for _ in range(20))
    )

    assert [r.status_code for r in responses] == [201] * 20, {r.text for r in responses}
    assert len({r.content for r in responses}) == 1, {r.content for r in responses}
    replayed = [r.headers.get("Idempotent-Replayed") for r in responses]
    assert replayed.count("true") == 19, replayed
    assert replayed.count(None) == 1, replayed

    assert await count_card_transactions(engine, number, type_) == 1
    assert await count_card_transactions(engine, number) == 2  # with the funding award
    assert (
        await scalar(
            engine,
            "SELECT count(*) FROM idempotency_keys WHERE key = :key",
            key=headers["Idempotency-Key"],
        )
        == 1
    )
    answer = responses[0].json()
    tx_id = await scalar(
        engine,
        "SELECT t.id FROM transactions t JOIN cards c ON c.id = t.card_id "
        "WHERE c.card_number = :n AND t.type = :type",
        n=number,
        type=type_,
    )
    assert answer["transaction_id"] == str(tx_id)
    expected = (90, 0) if endpoint == "redemption" else (125, 127)
    assert await api_balance(client, operator, number) == expected
    assert (answer["balance"]["points"], answer["balance"]["cashback"]) == expected
    await check_books(engine)


# 3. One partner, many tills, many cards, all at once ------------------------------------------


async def test_concurrent_accruals_at_one_partner_lose_nothing(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    partner, first_till = await partner_with_key(
        app, client, operator, earn_rate={"points": 1, "per_amount": 100}, cashback_bps=500
    )
    tills = [
        first_till,
        bearer(await insert_api_key(app, role="partner", partner_id=partner["id"], name="t2")),
        bearer(await insert_api_key(app, role="partner", partner_id=partner["id"], name="t3")),
    ]
    cards = [(await issue_card(client, operator))["card_number"] for _ in range(20)]
    purchases = [(cards[i % 20], tills[i % 3], 1_234 + 377 * i, f"rcpt-{i}") for i in range(60)]

    responses: list[Response] = await asyncio.gather(
        *(purchase(client, till, card, amount, ref) for card, till, amount, ref in purchases)
    )

    assert [r.status_code for r in responses] == [201] * 60, {
        r.text for r in responses if r.status_code != 201
    }
    expected: dict[str, tuple[int, int]] = dict.fromkeys(cards, (0, 0))
    for (card, _, amount, _), r in zip(purchases, responses, strict=True):
        points, cashback = amount // 100, amount * 500 // 10_000
        assert r.json()["earned"] == {"points": points, "cashback": cashback}
        assert r.json()["partner_id"] == partner["id"]
        expected[card] = (expected[card][0] + points, expected[card][1] + cashback)
    total_points = sum(p for p, _ in expected.values())
    total_cashback = sum(c for _, c in expected.values())
    assert (total_points, total_cashback) == (
        sum((1_234 + 377 * i) // 100 for i in range(60)),
        sum((1_234 + 377 * i) * 500 // 10_000 for i in range(60)),
    )

    assert (
        await scalar(
            engine,
            "SELECT count(*) FROM transactions WHERE partner_id = :p AND type = 'accrual'",
            p=uuid.UUID(partner["id"]),
        )
        == 60
    )
    assert {str(r.json()["transaction_id"]) for r in responses} == {
        str(i)
        for i in (
            await _all(engine, "SELECT id FROM transactions WHERE partner_id = :p", p=partner["id"])
        )
    }
    for card in cards:
        assert await api_balance(client, operator, card) == expected[card], card
        accounts = await card_accounts(engine, card)
        assert (accounts["points"].entries_total, accounts["cashback"].entries_total) == expected[
            card
        ]
    systems = await system_account_totals(engine)
    pid = uuid.UUID(partner["id"])
    assert systems[("partner_issued", pid, "points")] == -total_points
    assert systems[("partner_issued", pid, "cashback")] == -total_cashback
    assert systems[("partner_redeemed", pid, "points")] == 0
    entries = await check_books(engine)
    assert entries == {"points": 120, "cashback": 120}


async def _all(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).scalars())


# 4. A busy partner does not serialize its cards -----------------------------------------------

_BLOCKED_BY = text("SELECT pid FROM pg_stat_activity WHERE :holder = ANY(pg_blocking_pids(pid))")


async def _wait_until_blocked_by(engine: AsyncEngine, holder: int) -> int:
    """The pid of a backend waiting for a lock that `holder` holds. Each poll runs in a fresh
    transaction: pg_stat_activity is a snapshot per transaction."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        async with engine.connect() as conn:
            blocked = list((await conn.execute(_BLOCKED_BY, {"holder": holder})).scalars())
        if blocked:
            assert len(blocked) == 1, blocked
            return int(blocked[0])
        assert asyncio.get_running_loop().time() < deadline, "the request never blocked"
        await asyncio.sleep(0.02)


async def test_hot_partner_postings_for_different_cards_do_not_wait_for_each_other(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> None:
    """A separate transaction holds everything a posting for card A at partner P holds: the row
    locks of A's accounts, and an uncommitted accrual at P whose entries reference P's system
    accounts. While it is open an accrual for card B at P must complete, and one for card A must
    wait on exactly that transaction; once it commits, A's goes through too."""
    partner, till = await partner_with_key(
        app, client, operator, earn_rate={"points": 1, "per_amount": 100}, cashback_bps=500
    )
    pid = uuid.UUID(partner["id"])
    card_a = (await issue_card(client, operator))["card_number"]
    card_b = (await issue_card(client, operator))["card_number"]

    async with engine.connect() as holder:
        await holder.begin()
        holder_pid = int((await holder.execute(text("SELECT pg_backend_pid()"))).scalar_one())
        locked = (
            await holder.execute(
                text("""
                    SELECT a.id, a.asset FROM accounts a JOIN cards c ON c.id = a.card_id
                    WHERE c.card_number = :n ORDER BY a.id FOR UPDATE OF a
                """),
                {"n": card_a},
            )
        ).all()
        assert sorted(r.asset for r in locked) == ["cashback", "points"]
        card_account = {r.asset: int(r.id) for r in locked}
        # An in-flight accrual for A at P, written the way a posting writes it: 7 points and
        # 35 cents for a 7.00 purchase.
        partner_account = {
            r.asset: int(r.id)
            for r in await holder.execute(
                text(
                    "SELECT id, asset FROM accounts "
                    "WHERE partner_id = :p AND kind = 'partner_issued'"
                ),
                {"p": pid},
            )
        }
        key_id = await holder.execute(
            text("SELECT id FROM api_keys WHERE partner_id = :p"), {"p": pid}
        )
        tx_id = uuid.uuid4()
        await holder.execute(
            text("""
                INSERT INTO transactions (id, program_id, type, card_id, partner_id, api_key_id,
                    reference, purchase_amount, currency, occurred_at)
                SELECT :id, c.program_id, 'accrual', c.id, :p, :key, 'held-open', 700, 'EUR',
                       now()
                FROM cards c WHERE c.card_number = :n
            """),
            {"id": tx_id, "p": pid, "key": key_id.scalar_one(), "n": card_a},
        )
        for asset, amount in (("points", 7), ("cashback", 35)):
            await holder.execute(
                text("UPDATE accounts SET balance = balance + :x WHERE id = :id"),
                {"x": amount, "id": card_account[asset]},
            )
            await holder.execute(
                text("""
                    INSERT INTO entries (transaction_id, account_id, asset, amount)
                    VALUES (:t, :card, :asset, :x), (:t, :partner, :asset, -:x)
                """),
                {
                    "t": tx_id,
                    "card": card_account[asset],
                    "partner": partner_account[asset],
                    "asset": asset,
                    "x": amount,
                },
            )

        # A's request: in flight, and waiting for the holder, not for anything else.
        for_a = asyncio.create_task(purchase(client, till, card_a, 1_000, "for-a"))
        try:
            waiting_pid = await _wait_until_blocked_by(engine, holder_pid)
            async with engine.connect() as conn:
                blockers = (
                    await conn.execute(text("SELECT pg_blocking_pids(:p)"), {"p": waiting_pid})
                ).scalar_one()
            assert blockers == [holder_pid]
            assert not for_a.done()

            # B's request at the same partner, same till, completes meanwhile.
            try:
                for_b = await asyncio.wait_for(
                    purchase(client, till, card_b, 2_000, "for-b"), timeout=10
                )
            except TimeoutError:
                pytest.fail(
                    f"an accrual for card B at the partner did not complete while a posting "
                    f"for card A at the same partner was open (holder pid {holder_pid})"
                )
            assert for_b.status_code == 201, for_b.text
            assert for_b.json()["earned"] == {"points": 20, "cashback": 100}
            assert await api_balance(client, operator, card_b) == (20, 100)
            # ... while the holder still holds A and A's request still waits.
            assert await _wait_until_blocked_by(engine, holder_pid) == waiting_pid
            assert not for_a.done()
        except BaseException:
            for_a.cancel()
            raise
        await holder.commit()

    done_a = await asyncio.wait_for(for_a, timeout=10)
    assert done_a.status_code == 201, done_a.text
    assert done_a.json()["earned"] == {"points": 10, "cashback": 50}
    assert done_a.json()["balance"] == {"points": 17, "cashback": 85}
    assert await api_balance(client, operator, card_a) == (17, 85)
    systems = await system_account_totals(engine)
    assert systems[("partner_issued", pid, "points")] == -37
    assert systems[("partner_issued", pid, "cashback")] == -185
    await check_books(engine)

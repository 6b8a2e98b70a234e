"""The database's own guard of the books, tested with raw SQL around the service.

Real ids come from data created through the API; every statement here bypasses the service.
"""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.conftest import idem
from tests.factories.cards import issue_card
from tests.factories.partners import partner_with_key

RESTRICT_VIOLATION = "23001"
FOREIGN_KEY_VIOLATION = "23503"
CHECK_VIOLATION = "23514"


def sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    state = getattr(orig, "sqlstate", None)
    if state is None:
        state = getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    return state


@dataclass(frozen=True)
class Books:
    program_id: int
    api_key_id: uuid.UUID
    card_id: int
    partner_id: uuid.UUID
    card_points: int
    card_cashback: int
    partner_issued_points: int
    partner_issued_cashback: int
    tx_id: uuid.UUID
    """A real, balanced purchase posted through the API."""


@pytest.fixture
async def books(
    app: FastAPI, client: AsyncClient, operator: dict[str, str], engine: AsyncEngine
) -> Books:
    partner, till = await partner_with_key(app, client, operator)
    card = await issue_card(client, operator)
    response = await client.post(
        "/v1/accruals",
        json={
            "kind": "purchase",
            "card_number": card["card_number"],
            "amount": 10_000,
            "currency": "EUR",
            "reference": "R-1",
        },
        headers={**till, **idem()},
    )
    assert response.status_code == 201, response.text
    async with engine.connect() as conn:
        card_row = (
            await conn.execute(
                text("SELECT id, program_id FROM cards WHERE card_number = :n"),
                {"n": card["card_number"]},
            )
        ).one()
        accounts = {
            (r.kind, r.asset): r.id
            for r in await conn.execute(
                text("SELECT id, kind, asset FROM accounts WHERE card_id = :c OR partner_id = :p"),
                {"c": card_row.id, "p": uuid.UUID(partner["id"])},
            )
        }
        api_key_id = (
            await conn.execute(text("SELECT id FROM api_keys WHERE role = 'operator'"))
        ).scalar_one()
    return Books(
        program_id=card_row.program_id,
        api_key_id=api_key_id,
        card_id=card_row.id,
        partner_id=uuid.UUID(partner["id"]),
        card_points=accounts[("card", "points")],
        card_cashback=accounts[("card", "cashback")],
        partner_issued_points=accounts[("partner_issued", "points")],
        partner_issued_cashback=accounts[("partner_issued", "cashback")],
        tx_id=uuid.UUID(response.json()["transaction_id"]),
    )


@pytest.fixture
async def conn(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as connection:
        yield connection


INSERT_TX = text("""
    INSERT INTO transactions (id, program_id, type, card_id, api_key_id, occurred_at)
    VALUES (:id, :program_id, 'award', :card_id, :api_key_id, now())
""")

INSERT_ENTRY = text("""
    INSERT INTO entries (transaction_id, account_id, asset, amount)
    VALUES (:tx, :account, :asset, :amount)
""")


async def insert_tx(conn: AsyncConnection, books: Books) -> uuid.UUID:
    tx = uuid.uuid4()
    await conn.execute(
        INSERT_TX,
        {
            "id": tx,
            "program_id": books.program_id,
            "card_id": books.card_id,
            "api_key_id": books.api_key_id,
        },
    )
    return tx


async def insert_entry(
    conn: AsyncConnection, tx: uuid.UUID, account: int, asset: str, amount: int
) -> None:
    await conn.execute(
        INSERT_ENTRY, {"tx": tx, "account": account, "asset": asset, "amount": amount}
    )


async def count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as c:
        return int((await c.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def test_balanced_raw_transaction_commits(
    books: Books, conn: AsyncConnection, engine: AsyncEngine
) -> None:
    """The control case: the guard lets a correct transaction through."""
    await conn.begin()
    tx = await insert_tx(conn, books)
    await insert_entry(conn, tx, books.card_points, "points", 5)
    await insert_entry(conn, tx, books.partner_issued_points, "points", -5)
    await insert_entry(conn, tx, books.card_cashback, "cashback", 3)
    await insert_entry(conn, tx, books.partner_issued_cashback, "cashback", -3)
    await conn.commit()
    assert await count(engine, "transactions") == 2
    assert await count(engine, "entries") == 8


UNBALANCED = [
    [("card_points", "points", 5), ("partner_issued_points", "points", -4)],
    # Balanced in one asset, not in the other.
    [
        ("card_points", "points", 5),
        ("partner_issued_points", "points", -5),
        ("card_cashback", "cashback", 1),
    ],
    # Sums to zero overall, but across two assets.
    [("card_points", "points", 5), ("partner_issued_cashback", "cashback", -5)],
]


async def test_unbalanced_transaction_fails_at_commit(
    books: Books, conn: AsyncConnection, engine: AsyncEngine
) -> None:
    for legs in UNBALANCED:
        await conn.begin()
        tx = await insert_tx(conn, books)
        for account, asset, amount in legs:
            # Each statement succeeds: the check is deferred to COMMIT.
            await insert_entry(conn, tx, getattr(books, account), asset, amount)
        with pytest.raises(DBAPIError) as caught:
            await conn.commit()
        assert sqlstate(caught.value) == CHECK_VIOLATION, legs
        assert "does not balance" in str(caught.value), legs
        await conn.rollback()
    assert await count(engine, "transactions") == 1
    assert await count(engine, "entries") == 4


async def test_single_entry_transaction_fails_at_commit(
    books: Books, conn: AsyncConnection, engine: AsyncEngine
) -> None:
    await conn.begin()
    tx = await insert_tx(conn, books)
    await insert_entry(conn, tx, books.card_points, "points", 5)
    with pytest.raises(DBAPIError) as caught:
        await conn.commit()
    assert sqlstate(caught.value) == CHECK_VIOLATION
    assert await count(engine, "transactions") == 1


async def test_transaction_without_entries_fails_at_commit(
    books: Books, conn: AsyncConnection, engine: AsyncEngine
) -> None:
    await conn.begin()
    await insert_tx(conn, books)
    with pytest.raises(DBAPIError) as caught:
        await conn.commit()
    assert sqlstate(caught.value) == CHECK_VIOLATION
    assert "fewer than two entries" in str(caught.value)
    assert await count(engine, "transactions") == 1


async def test_entries_added_to_an_existing_transaction_must_balance(
    books: Books, conn: AsyncConnection, engine: AsyncEngine
) -> None:
    await conn.begin()
    await insert_entry(conn, books.tx_id, books.card_points, "points", 1)
    with pytest.raises(DBAPIError) as caught:
        await conn.commit()
    assert sqlstate(caught.value) == CHECK_VIOLATION
    assert await count(engine, "entries") == 4


async def test_zero_amount_entry_is_refused(books: Books, conn: AsyncConnection) -> None:
    await conn.begin()
    tx = await insert_tx(conn, books)
    with pytest.raises(DBAPIError) as caught:
        await insert_entry(conn, tx, books.card_points, "points", 0)
    assert sqlstate(caught.value) == CHECK_VIOLATION
    await conn.rollback()


MUTATIONS = [
    "UPDATE entries SET amount = amount * 2",
    "UPDATE entries SET amount = amount WHERE transaction_id = :tx",
    "DELETE FROM entries WHERE transaction_id = :tx",
    "DELETE FROM entries",
    "UPDATE transactions SET reference = 'tampered' WHERE id = :tx",
    "UPDATE transactions SET description = description",
    "DELETE FROM transactions WHERE id = :tx",
    "TRUNCATE entries",
    # CASCADE, so that only the trigger, not a foreign key, can stop it.
    "TRUNCATE entries CASCADE",
    "TRUNCATE transactions CASCADE",
]


async def test_ledger_rows_cannot_be_updated_deleted_or_truncated(
    books: Books, conn: AsyncConnection, engine: AsyncEngine
) -> None:
    for statement in MUTATIONS:
        await conn.begin()
        params = {"tx": books.tx_id} if ":tx" in statement else {}
        with pytest.raises(DBAPIError) as caught:
            await conn.execute(text(statement), params)
        assert sqlstate(caught.value) == RESTRICT_VIOLATION, statement
        assert "append-only" in str(caught.value), statement
        await conn.rollback()

    async with engine.connect() as check:
        rows = (
            await check.execute(
                text("SELECT asset, amount FROM entries WHERE transaction_id = :tx"),
                {"tx": books.tx_id},
            )
        ).all()
        reference = (
            await check.execute(
                text("SELECT reference FROM transactions WHERE id = :tx"), {"tx": books.tx_id}
            )
        ).scalar_one()
    assert sorted(tuple(r) for r in rows) == [
        ("cashback", -500),
        ("cashback", 500),
        ("points", -100),
        ("points", 100),
    ]
    assert reference == "R-1"
    assert await count(engine, "transactions") == 1


async def test_card_balance_cannot_go_negative_outside_a_clawback(
    books: Books, conn: AsyncConnection, engine: AsyncEngine
) -> None:
    """Checked at commit (deferred), so a clawback written in the same transaction counts."""
    await conn.begin()
    await conn.execute(
        text("UPDATE accounts SET balance = -1 WHERE id = :id"), {"id": books.card_points}
    )
    with pytest.raises(DBAPIError) as caught:
        await conn.commit()
    assert sqlstate(caught.value) == CHECK_VIOLATION
    assert "only a clawback may overdraw a card" in str(caught.value)
    async with engine.connect() as check:
        balance = (
            await check.execute(
                text("SELECT balance FROM accounts WHERE id = :id"), {"id": books.card_points}
            )
        ).scalar_one()
    assert balance == 100


async def test_a_clawback_may_overdraw_a_card(
    books: Books, conn: AsyncConnection, engine: AsyncEngine
) -> None:
    """A reversal taking back 150 of a card holding 100 commits, leaving a debt of 50."""
    await conn.begin()
    reversal = uuid.uuid4()
    await conn.execute(
        text("""
            INSERT INTO transactions (id, program_id, type, card_id, partner_id, api_key_id,
                                      corrects_id, occurred_at)
            VALUES (:id, :program_id, 'reversal', :card_id, :partner_id, :api_key_id, :tx, now())
        """),
        {
            "id": reversal,
            "program_id": books.program_id,
            "card_id": books.card_id,
            "partner_id": books.partner_id,
            "api_key_id": books.api_key_id,
            "tx": books.tx_id,
        },
    )
    await conn.execute(
        text("""
            INSERT INTO entries (transaction_id, account_id, asset, amount)
            VALUES (:id, :card, 'points', -150), (:id, :partner, 'points', 150)
        """),
        {"id": reversal, "card": books.card_points, "partner": books.partner_issued_points},
    )
    await conn.execute(
        text("UPDATE accounts SET balance = balance - 150 WHERE id = :id"),
        {"id": books.card_points},
    )
    await conn.commit()
    async with engine.connect() as check:
        balance = (
            await check.execute(
                text("SELECT balance FROM accounts WHERE id = :id"), {"id": books.card_points}
            )
        ).scalar_one()
    assert balance == -50


async def test_entry_asset_must_match_its_account(
    books: Books, conn: AsyncConnection, engine: AsyncEngine
) -> None:
    await conn.begin()
    tx = await insert_tx(conn, books)
    with pytest.raises(DBAPIError) as caught:
        # The card's points account, booked as cashback.
        await insert_entry(conn, tx, books.card_points, "cashback", 5)
    assert sqlstate(caught.value) == FOREIGN_KEY_VIOLATION
    assert "fk_entries_account_asset" in str(caught.value)
    await conn.rollback()
    assert await count(engine, "entries") == 4


async def test_entry_for_unknown_account_is_refused(books: Books, conn: AsyncConnection) -> None:
    await conn.begin()
    tx = await insert_tx(conn, books)
    with pytest.raises(DBAPIError) as caught:
        await insert_entry(conn, tx, 10**12, "points", 5)
    assert sqlstate(caught.value) == FOREIGN_KEY_VIOLATION
    await conn.rollback()


OTHER_CHECKS = [
    ("UPDATE accounts SET balance = 0 WHERE id = :partner_points", "ck_accounts_balance_iff_card"),
    ("UPDATE accounts SET balance = NULL WHERE id = :card_points", "ck_accounts_balance_iff_card"),
    ("UPDATE accounts SET asset = 'miles' WHERE id = :card_points", "ck_accounts_asset_known"),
    ("UPDATE cards SET card_number = '12ab5678' WHERE id = :card", "ck_cards_card_number_digits"),
    ("UPDATE cards SET status = 'lost' WHERE id = :card", "ck_cards_status_known"),
    (
        "UPDATE cards SET kind = 'personalized' WHERE id = :card",
        "ck_cards_customer_reference_iff_personalized",
    ),
]


async def test_other_checks(books: Books, conn: AsyncConnection) -> None:
    params = {
        "partner_points": books.partner_issued_points,
        "card_points": books.card_points,
        "card": books.card_id,
    }
    for statement, constraint in OTHER_CHECKS:
        await conn.begin()
        with pytest.raises(DBAPIError) as caught:
            await conn.execute(text(statement), params)
        assert sqlstate(caught.value) == CHECK_VIOLATION, statement
        assert constraint in str(caught.value), statement
        await conn.rollback()

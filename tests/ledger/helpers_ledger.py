"""Shared helpers of the ledger tests: checking the books with SQL, reading a card's accounts.

Every check reads the test database directly, not through the API, so it can catch an API that
reports one thing while the books say another.
"""

import uuid
from dataclasses import dataclass
from typing import Any

from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# Per transaction and asset, the entries must sum to zero.
_UNBALANCED_TRANSACTIONS = text("""
    SELECT transaction_id, asset, sum(amount) AS total FROM entries
    GROUP BY transaction_id, asset HAVING sum(amount) <> 0
""")

# Over the whole ledger, per asset, the entries must sum to zero.
_TOTALS_PER_ASSET = text("""
    SELECT asset, sum(amount) AS total, count(*) AS n FROM entries GROUP BY asset ORDER BY asset
""")

# A transaction has at least two entries.
_THIN_TRANSACTIONS = text("""
    SELECT t.id, count(e.id) AS n FROM transactions t
    LEFT JOIN entries e ON e.transaction_id = t.id
    GROUP BY t.id HAVING count(e.id) < 2
""")

# The running balance of a card account is the sum of its entries.
_CARD_BALANCE_DRIFT = text("""
    SELECT a.id, a.card_id, a.asset, a.balance, coalesce(sum(e.amount), 0) AS entries_total
    FROM accounts a LEFT JOIN entries e ON e.account_id = a.id
    WHERE a.kind = 'card'
    GROUP BY a.id
    HAVING a.balance IS DISTINCT FROM coalesce(sum(e.amount), 0)
""")

_NEGATIVE_CARD_BALANCES = text("""
    SELECT id, card_id, asset, balance FROM accounts WHERE kind = 'card' AND balance < 0
""")

# A card leg of a transaction belongs to the card the transaction is about.
_FOREIGN_CARD_LEGS = text("""
    SELECT e.id FROM entries e
    JOIN accounts a ON a.id = e.account_id
    JOIN transactions t ON t.id = e.transaction_id
    WHERE a.kind = 'card' AND a.card_id IS DISTINCT FROM t.card_id
""")

_CARD_ACCOUNTS = text("""
    SELECT a.asset, a.balance, coalesce(sum(e.amount), 0) AS entries_total, count(e.id) AS n
    FROM cards c
    JOIN accounts a ON a.card_id = c.id
    LEFT JOIN entries e ON e.account_id = a.id
    WHERE c.card_number = :card_number
    GROUP BY a.id
""")

_SYSTEM_ACCOUNT_TOTALS = text("""
    SELECT a.kind, a.partner_id, a.asset, coalesce(sum(e.amount), 0) AS total
    FROM accounts a LEFT JOIN entries e ON e.account_id = a.id
    WHERE a.kind <> 'card'
    GROUP BY a.id
""")

_CARD_TRANSACTION_COUNT = text("""
    SELECT count(*) FROM transactions t JOIN cards c ON c.id = t.card_id
    WHERE c.card_number = :card_number AND (CAST(:type AS text) IS NULL OR t.type = :type)
""")


async def check_books(engine: AsyncEngine) -> dict[str, int]:
    """Assert the double-entry invariants over the whole ledger; return the entry count per
    asset (so a caller can tell the books were not trivially empty)."""
    async with engine.connect() as conn:
        unbalanced = [tuple(r) for r in await conn.execute(_UNBALANCED_TRANSACTIONS)]
        totals = {r.asset: (int(r.total), int(r.n)) for r in await conn.execute(_TOTALS_PER_ASSET)}
        thin = [tuple(r) for r in await conn.execute(_THIN_TRANSACTIONS)]
        drift = [tuple(r) for r in await conn.execute(_CARD_BALANCE_DRIFT)]
        negative = [tuple(r) for r in await conn.execute(_NEGATIVE_CARD_BALANCES)]
        foreign = [tuple(r) for r in await conn.execute(_FOREIGN_CARD_LEGS)]
    assert unbalanced == [], f"transactions whose entries do not sum to zero: {unbalanced}"
    assert {asset: total for asset, (total, _) in totals.items()} == dict.fromkeys(totals, 0), (
        f"ledger totals per asset are not zero: {totals}"
    )
    assert thin == [], f"transactions with fewer than two entries: {thin}"
    assert drift == [], f"card balances that differ from the sum of their entries: {drift}"
    assert negative == [], f"negative card balances: {negative}"
    assert foreign == [], f"card legs on another card than the transaction's: {foreign}"
    return {asset: n for asset, (_, n) in totals.items()}


@dataclass(frozen=True)
class CardAccount:
    balance: int
    entries_total: int
    entry_count: int


async def card_accounts(engine: AsyncEngine, card_number: str) -> dict[str, CardAccount]:
    """The card's accounts by asset: stored balance, sum and number of entries."""
    async with engine.connect() as conn:
        rows = await conn.execute(_CARD_ACCOUNTS, {"card_number": card_number})
        return {r.asset: CardAccount(int(r.balance), int(r.entries_total), int(r.n)) for r in rows}


async def system_account_totals(
    engine: AsyncEngine,
) -> dict[tuple[str, uuid.UUID | None, str], int]:
    """(kind, partner_id, asset) -> sum of entries, for every partner and operator account."""
    async with engine.connect() as conn:
        rows = await conn.execute(_SYSTEM_ACCOUNT_TOTALS)
        return {(r.kind, r.partner_id, r.asset): int(r.total) for r in rows}


async def count_card_transactions(
    engine: AsyncEngine, card_number: str, type: str | None = None
) -> int:
    async with engine.connect() as conn:
        params = {"card_number": card_number, "type": type}
        return int((await conn.execute(_CARD_TRANSACTION_COUNT, params)).scalar_one())


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar_one()


async def api_balance(
    client: AsyncClient, headers: dict[str, str], card_number: str
) -> tuple[int, int]:
    """(points, cashback) as GET /v1/cards/{n}/balance reports them."""
    r = await client.get(f"/v1/cards/{card_number}/balance", headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    return body["points"], body["cashback"]

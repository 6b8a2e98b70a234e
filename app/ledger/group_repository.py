"""The SQL of set-based posting (app/ledger/engine.py): a fixed number of statements for a
group of postings of any size. Raw asyncpg (`$n` parameters, arrays in, rows out): this is
the hot path, and SQLAlchemy's per-statement overhead would cost more than the SQL itself."""

import uuid
from datetime import datetime
from typing import Any

import asyncpg

AUTH = """
    SELECT key_hash, id, role, partner_id FROM api_keys
    WHERE key_hash = ANY($1::bytea[]) AND revoked_at IS NULL AND program_id = $2
"""

# Claims each Idempotency-Key. A key held by a transaction still in flight makes this wait
# for it; a committed one is skipped and its answer fetched by ANSWERS.
CLAIM = """
    INSERT INTO idempotency_keys (api_key_id, key, request_hash)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[])
    ON CONFLICT (api_key_id, key) DO NOTHING
    RETURNING api_key_id, key
"""

ANSWERS = """
    SELECT i.api_key_id, i.key, i.request_hash, i.response_status, i.response_body
    FROM idempotency_keys i
    JOIN unnest($1::uuid[], $2::text[]) AS k(api_key_id, key)
      ON i.api_key_id = k.api_key_id AND i.key = k.key
"""

# Everything the rules need for each posting, one row per request, all index lookups.
CONTEXT = """
    SELECT r.idx,
           c.id AS card_id, c.status AS card_status,
           cp.id AS card_points_account, cc.id AS card_cashback_account,
           cp.balance AS card_points, cc.balance AS card_cashback,
           p.id AS partner_id, p.earn_points, p.earn_per_amount, p.cashback_bps,
           p.can_earn, p.can_redeem,
           pp.id AS counter_points_account, pc.id AS counter_cashback_account,
           coalesce(dp.id, dop.id) AS duplicate_id
    FROM unnest($1::int[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[])
         AS r(idx, card_number, partner_id, counter_kind, type, reference)
    LEFT JOIN cards c ON c.program_id = $7 AND c.card_number = r.card_number
    LEFT JOIN accounts cp ON cp.card_id = c.id AND cp.asset = 'points'
    LEFT JOIN accounts cc ON cc.card_id = c.id AND cc.asset = 'cashback'
    LEFT JOIN partners p ON p.program_id = $7 AND p.id = r.partner_id
    LEFT JOIN accounts pp
           ON pp.partner_id = p.id AND pp.kind = r.counter_kind AND pp.asset = 'points'
    LEFT JOIN accounts pc
           ON pc.partner_id = p.id AND pc.kind = r.counter_kind AND pc.asset = 'cashback'
    LEFT JOIN LATERAL (
        SELECT t.id FROM transactions t
        WHERE t.partner_id = r.partner_id AND t.type = r.type AND t.reference = r.reference
    ) dp ON true
    LEFT JOIN LATERAL (
        SELECT t.id FROM transactions t
        WHERE r.partner_id IS NULL AND t.program_id = $7 AND t.partner_id IS NULL
          AND t.type = r.type AND t.reference = r.reference
    ) dop ON true
"""

# The only locks a posting takes: the card accounts it touches, in id order (so two groups
# never wait on each other in a cycle). FOR NO KEY UPDATE returns the newest committed
# balance after any wait. System accounts are never locked.
LOCK_CARDS = """
    SELECT id, balance, now() AS now FROM accounts
    WHERE card_id = ANY($1::bigint[])
    ORDER BY id
    FOR NO KEY UPDATE
"""

# One statement writes the whole group: new card balances (computed under the locks above),
# the transactions, their entries, and the stored answers of their Idempotency-Keys.
WRITE = """
    WITH balances AS (
        UPDATE accounts a SET balance = v.balance
        FROM unnest($1::bigint[], $2::bigint[]) AS v(id, balance)
        WHERE a.id = v.id
    ),
    posted AS (
        INSERT INTO transactions
            (id, program_id, type, card_id, partner_id, api_key_id, reference,
             purchase_amount, currency, description, occurred_at)
        SELECT t.id, $3, t.type, t.card_id, t.partner_id, t.api_key_id, t.reference,
               t.purchase_amount, t.currency, t.description, t.occurred_at
        FROM unnest($4::uuid[], $5::text[], $6::bigint[], $7::uuid[], $8::uuid[], $9::text[],
                    $10::bigint[], $11::text[], $12::text[], $13::timestamptz[])
             AS t(id, type, card_id, partner_id, api_key_id, reference, purchase_amount,
                  currency, description, occurred_at)
    ),
    legs AS (
        INSERT INTO entries (transaction_id, account_id, asset, amount)
        SELECT * FROM unnest($14::uuid[], $15::bigint[], $16::text[], $17::bigint[])
    ),
    answers AS (
        UPDATE idempotency_keys i SET response_status = v.status, response_body = v.body
        FROM unnest($18::uuid[], $19::text[], $20::int[], $21::bytea[])
             AS v(api_key_id, key, status, body)
        WHERE i.api_key_id = v.api_key_id AND i.key = v.key
    )
    SELECT 1
"""


async def auth(
    conn: asyncpg.Connection, key_hashes: list[bytes], program_id: int
) -> list[asyncpg.Record]:
    return list(await conn.fetch(AUTH, key_hashes, program_id))


async def claim(
    conn: asyncpg.Connection, keys: list[tuple[uuid.UUID, str, bytes]]
) -> set[tuple[uuid.UUID, str]]:
    rows = await conn.fetch(CLAIM, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
    return {(r["api_key_id"], r["key"]) for r in rows}


async def answers(
    conn: asyncpg.Connection, keys: list[tuple[uuid.UUID, str]]
) -> dict[tuple[uuid.UUID, str], asyncpg.Record]:
    rows = await conn.fetch(ANSWERS, [k[0] for k in keys], [k[1] for k in keys])
    return {(r["api_key_id"], r["key"]): r for r in rows}


async def context(
    conn: asyncpg.Connection, program_id: int, rows: list[tuple[Any, ...]]
) -> dict[int, dict[str, Any]]:
    """rows: (idx, card_number, partner_id, counter_kind, type, reference)"""
    columns = list(zip(*rows, strict=True))
    result = await conn.fetch(CONTEXT, *columns, program_id)
    return {r["idx"]: dict(r) for r in result}


async def lock_cards(
    conn: asyncpg.Connection, card_ids: list[int]
) -> tuple[dict[int, int], datetime | None]:
    """Balances of the locked accounts, and the transaction's timestamp (None if none)."""
    if not card_ids:
        return {}, None
    rows = await conn.fetch(LOCK_CARDS, card_ids)
    now = rows[0]["now"] if rows else None
    return {r["id"]: r["balance"] for r in rows}, now


async def write(
    conn: asyncpg.Connection,
    program_id: int,
    balances: dict[int, int],
    transactions: list[tuple[Any, ...]],
    entries: list[tuple[uuid.UUID, int, str, int]],
    stored_answers: list[tuple[uuid.UUID, str, int, bytes]],
) -> None:
    def cols(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
        return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]

    await conn.execute(
        WRITE,
        list(balances),
        list(balances.values()),
        program_id,
        *cols(transactions, 10),
        *cols(entries, 4),
        *cols(stored_answers, 4),
    )

"""Pending points' SQL, on raw asyncpg: the posting engine releases matured points inside its
own database transaction, where only the driver connection exists. Every statement that
changes pending points runs with their card's accounts locked."""

import uuid
from typing import Any

import asyncpg

# The waiting points of some cards (whose accounts the caller locked) that are spendable now,
# with the partner the purchase was at (the maturity posting names it too).
MATURED_ON_CARDS = """
    SELECT p.id, p.card_id, p.account_id, p.remaining, t.partner_id FROM pending_points p
    JOIN transactions t ON t.id = p.id
    WHERE p.card_id = ANY($1::bigint[]) AND p.released_by IS NULL AND p.remaining > 0
      AND p.spendable_at <= now()
    ORDER BY p.spendable_at, p.id
"""

# Cards with matured points, for the release run, a page at a time.
MATURED_CARDS = """
    SELECT DISTINCT card_id FROM (
        SELECT card_id FROM pending_points
        WHERE released_by IS NULL AND remaining > 0 AND spendable_at <= now() AND program_id = $1
        ORDER BY spendable_at LIMIT $2
    ) page
"""

# One statement releases them all: a `maturity` transaction per purchase, from the pending
# account to the card; the card accounts' balance up and pending down by the same amount.
RELEASE = """
    WITH v AS (
        SELECT * FROM unnest($2::uuid[], $3::uuid[], $4::bigint[], $5::bigint[], $6::bigint[],
                             $7::uuid[])
                 AS v(id, transaction_id, card_id, account_id, amount, partner_id)
    ),
    moved AS (
        UPDATE accounts a SET balance = a.balance + s.amount, pending = a.pending - s.amount
        FROM (SELECT account_id, sum(amount) AS amount FROM v GROUP BY account_id) s
        WHERE a.id = s.account_id
    ),
    posted AS (
        INSERT INTO transactions (id, program_id, type, card_id, partner_id, corrects_id,
                                  description, occurred_at)
        SELECT v.transaction_id, $1, 'maturity', v.card_id, v.partner_id, v.id,
               'return window passed', now()
        FROM v
    ),
    legs AS (
        INSERT INTO entries (transaction_id, account_id, asset, amount)
        SELECT v.transaction_id, $8, 'points', -v.amount FROM v
        UNION ALL
        SELECT v.transaction_id, v.account_id, 'points', v.amount FROM v
    )
    UPDATE pending_points p SET released_by = v.transaction_id FROM v
    WHERE p.id = v.id AND p.released_by IS NULL
"""

# A replaced or merged card's waiting points follow its value to the card that takes it over.
MOVE_WAITING = """
    WITH moved AS (
        UPDATE pending_points p SET card_id = $2, account_id = n.id
        FROM accounts n
        WHERE p.card_id = $1 AND p.released_by IS NULL AND p.remaining > 0
          AND n.card_id = $2 AND n.asset = 'points'
        RETURNING p.account_id, p.remaining
    ),
    gained AS (
        UPDATE accounts a SET pending = a.pending + s.amount
        FROM (SELECT account_id, sum(remaining) AS amount FROM moved GROUP BY account_id) s
        WHERE a.id = s.account_id
    )
    UPDATE accounts SET pending = 0 WHERE card_id = $1 AND pending <> 0
"""

# What a purchase still has pending (its card locked by the caller), for a return or reversal.
WAITING_OF = """
    SELECT remaining FROM pending_points WHERE id = $1 AND released_by IS NULL
"""

# A return or reversal took `$2` of a purchase's pending points back.
TAKE = """
    WITH taken AS (
        UPDATE pending_points SET remaining = remaining - $2
        WHERE id = $1 AND released_by IS NULL AND remaining >= $2
        RETURNING account_id
    )
    UPDATE accounts a SET pending = a.pending - $2 FROM taken WHERE a.id = taken.account_id
    RETURNING a.id
"""


async def matured_on_cards(conn: asyncpg.Connection, card_ids: list[int]) -> list[asyncpg.Record]:
    return list(await conn.fetch(MATURED_ON_CARDS, card_ids))


async def matured_cards(conn: asyncpg.Connection, program_id: int, limit: int) -> list[int]:
    return [r["card_id"] for r in await conn.fetch(MATURED_CARDS, program_id, limit)]


async def release(
    conn: asyncpg.Connection,
    program_id: int,
    pending_account: int,
    rows: list[tuple[Any, ...]],
) -> None:
    """rows: (pending id, maturity transaction id, card id, card account id, amount, partner)."""
    columns = [list(c) for c in zip(*rows, strict=True)]
    await conn.execute(RELEASE, program_id, *columns, pending_account)


async def move_waiting(conn: asyncpg.Connection, from_card_id: int, to_card_id: int) -> None:
    await conn.execute(MOVE_WAITING, from_card_id, to_card_id)


async def waiting_of(conn: asyncpg.Connection, accrual_id: uuid.UUID) -> int:
    value = await conn.fetchval(WAITING_OF, accrual_id)
    return int(value or 0)


async def take(conn: asyncpg.Connection, accrual_id: uuid.UUID, points: int) -> None:
    if await conn.fetchval(TAKE, accrual_id, points) is None:
        raise RuntimeError("pending points changed despite the card lock")

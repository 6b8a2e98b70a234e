"""Expiry's SQL, on raw asyncpg like the hot path (the posting engine expires due points inside
its own database transaction, where only the driver connection exists).

Every statement that reads lots to change them runs with the card's accounts locked: that lock
orders expiry, postings, transfers and concurrent runs, so nothing expires twice."""

import uuid
from datetime import date, datetime

import asyncpg

_TODAY = "timezone($2, now())::date"

# The points account and lots of each card (locked by the caller) that has something due:
# a lot whose day came, or ($3 given) no activity since $3. Expiry transactions are not
# activity; a transfer in is (a replacement card starts its life with one).
DUE_ON_CARDS = f"""
    SELECT * FROM (
    SELECT a.card_id, a.id AS account_id, a.balance, a.held + a.pending AS reserved,
           {_TODAY} AS today,
           ($3::timestamptz IS NOT NULL AND NOT EXISTS (
               SELECT 1 FROM transactions t
               WHERE t.card_id = a.card_id AND t.posted_at >= $3 AND t.type <> 'expiry'
           ) AND NOT EXISTS (
               SELECT 1 FROM transactions t
               WHERE t.counterparty_card_id = a.card_id AND t.posted_at >= $3
           )) AS inactive,
           coalesce(array_agg(l.earned_on ORDER BY l.expires_on, l.earned_on)
                    FILTER (WHERE l.card_id IS NOT NULL), '{{}}') AS earned,
           coalesce(array_agg(CASE WHEN l.expires_on <> 'infinity' THEN l.expires_on END
                              ORDER BY l.expires_on, l.earned_on)
                    FILTER (WHERE l.card_id IS NOT NULL), '{{}}') AS expires,
           coalesce(array_agg(l.amount ORDER BY l.expires_on, l.earned_on)
                    FILTER (WHERE l.card_id IS NOT NULL), '{{}}') AS amounts,
           coalesce(bool_or(l.expires_on <= {_TODAY}), false) AS lots_due
    FROM accounts a LEFT JOIN point_lots l ON l.card_id = a.card_id
    WHERE a.card_id = ANY($1::bigint[]) AND a.asset = 'points'
    GROUP BY a.card_id, a.id, a.balance, a.held, a.pending
    ) d WHERE d.lots_due OR d.inactive
"""

# Lots whose day came, on cards (locked) whose points no longer cover any of them once what was
# due expired: they are spent or expired, so keeping them would only slow every read.
DROP_SPENT = f"""
    DELETE FROM point_lots l USING unnest($1::bigint[]) AS v(card_id)
    WHERE l.card_id = v.card_id AND l.expires_on <= {_TODAY}
"""

# Which months' points each expiry took (breakage by cohort).
EXPIRED_COHORTS = """
    INSERT INTO expired_points (transaction_id, earned_month, points)
    SELECT * FROM unnest($1::uuid[], $2::date[], $3::bigint[])
"""

# Cards with lots due, a page at a time, in card id order after $3.
CARDS_WITH_LOTS_DUE = f"""
    SELECT DISTINCT l.card_id FROM point_lots l JOIN cards c ON c.id = l.card_id
    WHERE l.expires_on <= {_TODAY} AND c.program_id = $1 AND l.card_id > $3
    ORDER BY l.card_id LIMIT $4
"""

# Cards holding points with no activity since $3 (the inactivity rule), a page at a time.
INACTIVE_CARDS = """
    SELECT a.card_id FROM accounts a JOIN cards c ON c.id = a.card_id
    WHERE c.program_id = $1 AND a.asset = 'points' AND a.balance > 0 AND a.card_id > $2
      AND NOT EXISTS (
          SELECT 1 FROM transactions t
          WHERE t.card_id = a.card_id AND t.posted_at >= $3 AND t.type <> 'expiry')
      AND NOT EXISTS (
          SELECT 1 FROM transactions t
          WHERE t.counterparty_card_id = a.card_id AND t.posted_at >= $3)
    ORDER BY a.card_id LIMIT $4
"""

# A card's lots, all of them, for moving them with its points.
LOTS = """
    SELECT l.earned_on, CASE WHEN l.expires_on <> 'infinity' THEN l.expires_on END AS expires_on,
           l.amount, a.balance + a.held + a.pending AS total
    FROM accounts a JOIN point_lots l ON l.card_id = a.card_id
    WHERE a.card_id = $1 AND a.asset = 'points'
"""

# A card's lots, replaced (the caller has locked the card).
DROP_LOTS = "DELETE FROM point_lots WHERE card_id = $1"
ADD_LOTS = """
    INSERT INTO point_lots (card_id, expires_on, earned_on, amount)
    SELECT $1, coalesce(v.expires_on, 'infinity'), v.earned_on, v.amount
    FROM unnest($2::date[], $3::date[], $4::bigint[]) AS v(earned_on, expires_on, amount)
"""


async def due_on_cards(
    conn: asyncpg.Connection, timezone: str, card_ids: list[int], inactive_since: datetime | None
) -> list[asyncpg.Record]:
    return list(await conn.fetch(DUE_ON_CARDS, card_ids, timezone, inactive_since))


async def expired_cohorts(
    conn: asyncpg.Connection, rows: list[tuple[uuid.UUID, date, int]]
) -> None:
    if rows:
        await conn.execute(EXPIRED_COHORTS, *[list(c) for c in zip(*rows, strict=True)])


async def drop_spent(conn: asyncpg.Connection, timezone: str, card_ids: list[int]) -> None:
    await conn.execute(DROP_SPENT, card_ids, timezone)


async def cards_with_lots_due(
    conn: asyncpg.Connection, program_id: int, timezone: str, after: int, limit: int
) -> list[int]:
    rows = await conn.fetch(CARDS_WITH_LOTS_DUE, program_id, timezone, after, limit)
    return [r["card_id"] for r in rows]


async def inactive_cards(
    conn: asyncpg.Connection, program_id: int, after: int, since: datetime, limit: int
) -> list[int]:
    rows = await conn.fetch(INACTIVE_CARDS, program_id, after, since, limit)
    return [r["card_id"] for r in rows]


async def lots(conn: asyncpg.Connection, card_id: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(LOTS, card_id))


async def replace_lots(
    conn: asyncpg.Connection, card_id: int, lots: list[tuple[date, date | None, int]]
) -> None:
    """lots: (earned_on, expires_on or None for never, amount)."""
    await conn.execute(DROP_LOTS, card_id)
    if lots:
        await conn.execute(ADD_LOTS, card_id, *[list(c) for c in zip(*lots, strict=True)])

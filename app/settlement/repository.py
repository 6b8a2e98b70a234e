"""The settlement's SQL. Closing runs under a transaction-scoped advisory lock per program, so
two closes never run at once; it takes no lock the postings take."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

LOCK_CLOSING = text("SELECT pg_advisory_xact_lock(7301, :program_id)")

LAST_CLOSED = text("""
    SELECT max(period_end) AS period_end, max(period_start) AS period_start
    FROM settlement_periods WHERE program_id = :program_id
""")

FIRST_POSTING = text("""
    SELECT min(posted_at) FROM transactions
    WHERE program_id = :program_id AND partner_id IS NOT NULL
""")

# What each partner's points and cashback accounts moved, per kind of movement and price, in
# the postings not yet on any statement that were posted before the period's end. Those posted
# before its start are late: they committed after their own period closed. (Only postings
# since `scan_from` are read: nothing commits a day after its posted_at.)
MOVEMENTS = text("""
    SELECT a.partner_id, a.kind AS account_kind, e.asset,
           t.type IN ('refund', 'reversal') AS correction,
           CASE WHEN e.asset = 'points' THEN t.points_price END AS points_price,
           -- Cashback a purchase granted: funded by the partner unless its terms then said not
           -- (no terms: the partner funds what it grants).
           CASE WHEN e.asset = 'cashback' AND a.kind = 'partner_issued'
                THEN coalesce(t.cashback_funded, true) END AS cashback_funded,
           t.posted_at < :start AS late,
           count(DISTINCT t.id) AS postings, sum(e.amount) AS total,
           array_agg(DISTINCT t.id) AS transaction_ids
    FROM transactions t
    JOIN entries e ON e.transaction_id = t.id
    JOIN accounts a ON a.id = e.account_id
    WHERE t.program_id = :program_id AND t.posted_at < :end AND t.posted_at >= :scan_from
      AND a.kind IN ('partner_issued', 'partner_redeemed')
      AND NOT EXISTS (SELECT 1 FROM settled_transactions s WHERE s.transaction_id = t.id)
    GROUP BY 1, 2, 3, 4, 5, 6, 7
""")

# Every partner's fees in force at the period's end.
TERMS = text("""
    SELECT p.id AS partner_id, pr.fee_per_period, pr.fee_bps
    FROM partners p
    LEFT JOIN LATERAL (
        SELECT * FROM partner_prices x
        WHERE x.partner_id = p.id AND x.effective_from < :end
        ORDER BY x.effective_from DESC LIMIT 1
    ) pr ON true
    WHERE p.program_id = :program_id
""")

INSERT_PERIOD = text("""
    INSERT INTO settlement_periods (program_id, period_start, period_end)
    VALUES (:program_id, :start, :end)
""")

SETTLEMENT_ACCOUNTS = text("""
    WITH wanted AS (
        SELECT 'partner_settlement' AS kind, CAST(:partner_id AS uuid) AS partner_id
        UNION ALL SELECT 'operator_settlement', NULL
    )
    INSERT INTO accounts (program_id, kind, asset, partner_id)
    SELECT :program_id, w.kind, 'money', w.partner_id FROM wanted w
    WHERE NOT EXISTS (
        SELECT 1 FROM accounts a
        WHERE a.program_id = :program_id AND a.kind = w.kind AND a.asset = 'money'
          AND a.partner_id IS NOT DISTINCT FROM w.partner_id
    )
""")

ACCOUNTS = text("""
    SELECT kind, id FROM accounts
    WHERE program_id = :program_id AND asset = 'money'
      AND ((kind = 'partner_settlement' AND partner_id = :partner_id)
           OR kind = 'operator_settlement')
""")

POST_MONEY = text("""
    WITH posted AS (
        INSERT INTO transactions (id, program_id, type, partner_id, api_key_id, reference,
                                  description, occurred_at)
        VALUES (:id, :program_id, :type, :partner_id, :api_key_id, :reference, :description,
                now())
    )
    INSERT INTO entries (transaction_id, account_id, asset, amount)
    VALUES (:id, :partner_account, 'money', :partner_amount),
           (:id, :operator_account, 'money', -:partner_amount)
""")

INSERT_STATEMENT = text("""
    INSERT INTO statements (id, program_id, partner_id, period_start, period_end, net_amount,
                            transaction_id)
    VALUES (:id, :program_id, :partner_id, :start, :end, :net_amount, :transaction_id)
""")

INSERT_LINES = text("""
    INSERT INTO statement_lines (statement_id, line_no, kind, late, points_price, postings,
                                 quantity, amount)
    SELECT :statement_id, * FROM unnest(CAST(:line_no AS smallint[]), CAST(:kind AS text[]),
                                        CAST(:late AS boolean[]), CAST(:price AS bigint[]),
                                        CAST(:postings AS int[]), CAST(:quantity AS bigint[]),
                                        CAST(:amount AS bigint[]))
""")

INSERT_SETTLED = text("""
    INSERT INTO settled_transactions (transaction_id, statement_id)
    SELECT unnest(CAST(:ids AS uuid[])), :statement_id
""")

STATEMENT_COLUMNS = """
    s.id, s.partner_id, p.code AS partner_code, s.period_start, s.period_end, s.net_amount,
    s.transaction_id, s.created_at
"""

STATEMENTS = text(f"""
    SELECT {STATEMENT_COLUMNS} FROM statements s JOIN partners p ON p.id = s.partner_id
    WHERE s.program_id = :program_id
      AND (CAST(:partner_id AS uuid) IS NULL OR s.partner_id = :partner_id)
    ORDER BY s.period_start DESC, p.code LIMIT :limit
""")

STATEMENT = text(f"""
    SELECT {STATEMENT_COLUMNS} FROM statements s JOIN partners p ON p.id = s.partner_id
    WHERE s.program_id = :program_id AND s.id = :id
""")

LINES = text("""
    SELECT line_no, kind, late, points_price, postings, quantity, amount
    FROM statement_lines WHERE statement_id = :id ORDER BY line_no
""")

INSERT_PAYMENT = text("""
    INSERT INTO payments (id, program_id, partner_id, statement_id, amount, reference,
                          api_key_id)
    VALUES (:id, :program_id, :partner_id, :statement_id, :amount, :reference, :api_key_id)
    ON CONFLICT (partner_id, reference) DO NOTHING
    RETURNING id, partner_id, statement_id, amount, reference, created_at
""")

PAYMENT_REFERENCE_TAKEN = text("""
    SELECT 1 FROM payments WHERE partner_id = :partner_id AND reference = :reference
""")

# A partner's position: what its statements and payments add up to (its settlement account).
POSITION = text("""
    SELECT coalesce((SELECT sum(net_amount) FROM statements WHERE partner_id = :partner_id), 0)
               AS statements,
           coalesce((SELECT sum(amount) FROM payments WHERE partner_id = :partner_id), 0)
               AS payments,
           coalesce((SELECT sum(e.amount) FROM entries e JOIN accounts a ON a.id = e.account_id
                     WHERE a.kind = 'partner_settlement' AND a.partner_id = :partner_id), 0)
               AS account
""")


async def lock_closing(conn: AsyncConnection, program_id: int) -> None:
    await conn.execute(LOCK_CLOSING, {"program_id": program_id})


async def last_closed(conn: AsyncConnection, program_id: int) -> Row[tuple[object, ...]]:
    return (await conn.execute(LAST_CLOSED, {"program_id": program_id})).one()


async def first_posting(conn: AsyncConnection, program_id: int) -> datetime | None:
    value: datetime | None = (
        await conn.execute(FIRST_POSTING, {"program_id": program_id})
    ).scalar()
    return value


async def movements(
    conn: AsyncConnection, program_id: int, start: datetime, end: datetime, scan_from: datetime
) -> list[Row[tuple[object, ...]]]:
    params = {"program_id": program_id, "start": start, "end": end, "scan_from": scan_from}
    return list(await conn.execute(MOVEMENTS, params))


async def terms(
    conn: AsyncConnection, program_id: int, end: datetime
) -> list[Row[tuple[object, ...]]]:
    return list(await conn.execute(TERMS, {"program_id": program_id, "end": end}))


async def insert_period(
    conn: AsyncConnection, program_id: int, start: datetime, end: datetime
) -> None:
    await conn.execute(INSERT_PERIOD, {"program_id": program_id, "start": start, "end": end})


async def settlement_accounts(
    conn: AsyncConnection, program_id: int, partner_id: uuid.UUID
) -> dict[str, int]:
    params = {"program_id": program_id, "partner_id": partner_id}
    await conn.execute(SETTLEMENT_ACCOUNTS, params)
    return {r.kind: r.id for r in await conn.execute(ACCOUNTS, params)}


async def post_money(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(POST_MONEY, values)


async def insert_statement(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(INSERT_STATEMENT, values)


async def insert_lines(
    conn: AsyncConnection, statement_id: uuid.UUID, lines: list[tuple[Any, ...]]
) -> None:
    columns = [list(c) for c in zip(*lines, strict=True)]
    names = ("line_no", "kind", "late", "price", "postings", "quantity", "amount")
    params = dict(zip(names, columns, strict=True))
    await conn.execute(INSERT_LINES, {"statement_id": statement_id, **params})


async def insert_settled(
    conn: AsyncConnection, statement_id: uuid.UUID, transaction_ids: list[uuid.UUID]
) -> None:
    if transaction_ids:
        await conn.execute(INSERT_SETTLED, {"statement_id": statement_id, "ids": transaction_ids})


async def statements(
    conn: AsyncConnection, program_id: int, partner_id: uuid.UUID | None, limit: int
) -> list[Row[tuple[object, ...]]]:
    params = {"program_id": program_id, "partner_id": partner_id, "limit": limit}
    return list(await conn.execute(STATEMENTS, params))


async def statement(
    conn: AsyncConnection, program_id: int, statement_id: uuid.UUID
) -> Row[tuple[object, ...]] | None:
    params = {"program_id": program_id, "id": statement_id}
    return (await conn.execute(STATEMENT, params)).first()


async def lines(conn: AsyncConnection, statement_id: uuid.UUID) -> list[Row[tuple[object, ...]]]:
    return list(await conn.execute(LINES, {"id": statement_id}))


async def insert_payment(conn: AsyncConnection, **values: Any) -> Row[tuple[object, ...]] | None:
    return (await conn.execute(INSERT_PAYMENT, values)).first()


async def payment_reference_taken(
    conn: AsyncConnection, partner_id: uuid.UUID, reference: str
) -> bool:
    params = {"partner_id": partner_id, "reference": reference}
    return (await conn.execute(PAYMENT_REFERENCE_TAKEN, params)).first() is not None


async def position(conn: AsyncConnection, partner_id: uuid.UUID) -> Row[tuple[object, ...]]:
    return (await conn.execute(POSITION, {"partner_id": partner_id})).one()

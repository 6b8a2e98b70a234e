"""The roll-forward of what the program owes its cardholders, per period and asset:

    opening + issued - redeemed - expired + adjustments = closing

Owed (the liability) is what the card accounts hold plus what sits on hold or pending for
them: the customer side of the ledger. Every other points or cashback account is the other
side, so the change in the liability over a period is, to the point, minus what those accounts
moved; the report splits that by what moved it:
  - issued: earned (accruals, awards) from the partners' and the operator's issued accounts;
  - redeemed: spent (redemptions, captures) into the redeemed accounts;
  - expired: to the breakage account;
  - adjustments: everything else (returns, refunds and reversals of the above).
`closing` is read from the entries too, independently, and `reconciles` says they agree.
"""

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

CUSTOMER_KINDS = "('card', 'operator_held', 'operator_pending')"

ROLL_FORWARD = text(f"""
    WITH bounds AS (
        SELECT * FROM unnest(CAST(:starts AS timestamptz[]), CAST(:ends AS timestamptz[]))
                 AS b(period_start, period_end)
    ),
    moves AS (
        SELECT e.asset, a.kind, t.type, t.posted_at, e.amount
        FROM entries e
        JOIN transactions t ON t.id = e.transaction_id
        JOIN accounts a ON a.id = e.account_id
        WHERE t.program_id = :program_id AND e.asset IN ('points', 'cashback')
          AND t.posted_at < :until
    ),
    assets AS (SELECT unnest(ARRAY['points', 'cashback']) AS asset)
    SELECT b.period_start, b.period_end, x.asset,
           coalesce(sum(m.amount) FILTER (
               WHERE m.kind IN {CUSTOMER_KINDS} AND m.posted_at < b.period_start), 0) AS opening,
           coalesce(-sum(m.amount) FILTER (
               WHERE m.posted_at >= b.period_start
                 AND m.kind IN ('partner_issued', 'operator_issued')
                 AND m.type IN ('accrual', 'award')), 0) AS issued,
           coalesce(sum(m.amount) FILTER (
               WHERE m.posted_at >= b.period_start
                 AND m.kind IN ('partner_redeemed', 'operator_redeemed')
                 AND m.type IN ('redemption', 'capture')), 0) AS redeemed,
           coalesce(sum(m.amount) FILTER (
               WHERE m.posted_at >= b.period_start AND m.kind = 'operator_breakage'), 0)
               AS expired,
           coalesce(-sum(m.amount) FILTER (
               WHERE m.posted_at >= b.period_start AND m.kind NOT IN {CUSTOMER_KINDS}
                 AND m.kind <> 'operator_breakage'
                 AND NOT (m.kind IN ('partner_issued', 'operator_issued')
                          AND m.type IN ('accrual', 'award'))
                 AND NOT (m.kind IN ('partner_redeemed', 'operator_redeemed')
                          AND m.type IN ('redemption', 'capture'))), 0) AS adjustments,
           coalesce(sum(m.amount) FILTER (WHERE m.kind IN {CUSTOMER_KINDS}), 0) AS closing
    FROM bounds b CROSS JOIN assets x
    LEFT JOIN moves m ON m.asset = x.asset AND m.posted_at < b.period_end
    GROUP BY b.period_start, b.period_end, x.asset
    ORDER BY b.period_start, x.asset
""")


async def roll_forward(
    conn: AsyncConnection,
    program_id: int,
    periods: list[tuple[datetime, datetime]],
) -> list[Row[tuple[object, ...]]]:
    params = {
        "program_id": program_id,
        "starts": [p[0] for p in periods],
        "ends": [p[1] for p in periods],
        "until": periods[-1][1],
    }
    return list(await conn.execute(ROLL_FORWARD, params))

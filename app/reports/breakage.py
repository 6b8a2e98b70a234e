"""Breakage: points that expired, per month they expired in, and per cohort (the month they
were earned in): the share of what the cohort issued that expired, in basis points.

Issued per cohort: what accruals and awards credited (from the partners' and the operator's
issued accounts), by the month of the posting's occurred_at in the program's time zone, less
what returns and reversals of them took back. Expired per cohort: what each expiry recorded
it took from lots of that month (expired_points), oldest first.
"""

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

EXPIRED_BY_MONTH = text("""
    SELECT date_trunc('month', timezone(:tz, t.posted_at))::date AS month,
           count(DISTINCT t.id) AS expiries, sum(e.amount) AS points
    FROM transactions t
    JOIN entries e ON e.transaction_id = t.id
    JOIN accounts a ON a.id = e.account_id AND a.kind = 'operator_breakage'
    WHERE t.program_id = :program_id AND t.type = 'expiry'
      AND t.posted_at >= :since AND t.posted_at < :until
    GROUP BY 1 ORDER BY 1
""")

COHORTS = text("""
    WITH issued AS (
        SELECT date_trunc('month', timezone(:tz, coalesce(o.occurred_at, t.occurred_at)))::date
                   AS month,
               -sum(e.amount) AS points
        FROM transactions t
        LEFT JOIN transactions o ON o.id = t.corrects_id
        JOIN entries e ON e.transaction_id = t.id
        JOIN accounts a ON a.id = e.account_id
        WHERE t.program_id = :program_id AND e.asset = 'points'
          AND a.kind IN ('partner_issued', 'operator_issued')
          AND (t.type IN ('accrual', 'award')
               OR (t.type IN ('refund', 'reversal') AND o.type IN ('accrual', 'award')))
        GROUP BY 1
    ),
    expired AS (
        SELECT x.earned_month AS month, sum(x.points) AS points
        FROM expired_points x JOIN transactions t ON t.id = x.transaction_id
        WHERE t.program_id = :program_id
        GROUP BY 1
    )
    SELECT coalesce(i.month, x.month) AS cohort, coalesce(i.points, 0) AS issued,
           coalesce(x.points, 0) AS expired
    FROM issued i FULL JOIN expired x ON x.month = i.month
    WHERE coalesce(i.month, x.month) >= :since_month AND coalesce(i.month, x.month) < :until
    ORDER BY 1
""")


def rate_bps(part: int, whole: int) -> int | None:
    """part / whole in basis points, rounded half up (None when nothing was issued)."""
    if whole <= 0:
        return None
    return (part * 20_000 + whole) // (2 * whole)


async def expired_by_month(
    conn: AsyncConnection, program_id: int, timezone: str, since: datetime, until: datetime
) -> list[Row[tuple[object, ...]]]:
    params = {"program_id": program_id, "tz": timezone, "since": since, "until": until}
    return list(await conn.execute(EXPIRED_BY_MONTH, params))


async def cohorts(
    conn: AsyncConnection, program_id: int, timezone: str, since: datetime, until: datetime
) -> list[Row[tuple[object, ...]]]:
    params = {
        "program_id": program_id,
        "tz": timezone,
        "since_month": since.date().replace(day=1),
        "until": until.date(),
    }
    return list(await conn.execute(COHORTS, params))

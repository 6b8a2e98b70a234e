from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

# What each rule granted over a period, from what the accruals recorded when they were posted
# (`earnings`), with the rule's name where it has one.
RULES = text("""
    SELECT e.rule, e.rule_ref,
           coalesce(p.name, k.name) AS name,
           count(DISTINCT t.id) AS purchases,
           count(DISTINCT t.card_id) AS cards,
           sum(e.points) AS points,
           sum(e.cashback) AS cashback,
           -- At the issue price each purchase recorded (per 1,000 points), rounded once per
           -- rule, half away from zero.
           round(sum(e.points::numeric * t.points_price) / 1000) AS points_value,
           coalesce(sum(e.points) FILTER (WHERE t.points_price IS NULL), 0) AS unpriced_points
    FROM earnings e
    JOIN transactions t ON t.id = e.transaction_id
    LEFT JOIN partners p ON e.rule = 'base' AND p.id::text = e.rule_ref
    LEFT JOIN campaigns k
           ON e.rule = 'campaign' AND k.program_id = t.program_id AND k.code = e.rule_ref
    WHERE t.program_id = :program_id AND t.posted_at >= :since AND t.posted_at < :until
    GROUP BY e.rule, e.rule_ref, p.name, k.name
    ORDER BY e.rule, sum(e.points) DESC, e.rule_ref
""")


async def rules(
    conn: AsyncConnection, program_id: int, since: datetime, until: datetime
) -> list[Row[tuple[object, ...]]]:
    params = {"program_id": program_id, "since": since, "until": until}
    return list(await conn.execute(RULES, params))

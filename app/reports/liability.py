"""What the program owes its cardholders as of a moment: points and cashback outstanding (on
cards, on hold, pending), in total and per partner where they were earned, valued in money.

Per partner: a point carries no mark of where it was earned once it sits in a balance, so the
outstanding total is shared out in proportion to what each partner issued (net of returns)
up to then, the operator's own awards and bonuses being one more source; largest remainders,
so the shares add up to the total exactly. Each share is valued at its partner's issue price in
force at that moment (what the partner paid for such points); the operator's at nothing.

Expiry buckets (today only: lots are not kept historically): outstanding points by when they
expire, from the lots each card still covers (app/expiry/policy.py).
"""

from datetime import date, datetime

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

OUTSTANDING = text("""
    SELECT e.asset, coalesce(sum(e.amount), 0) AS outstanding
    FROM entries e
    JOIN transactions t ON t.id = e.transaction_id
    JOIN accounts a ON a.id = e.account_id
    WHERE t.program_id = :program_id AND t.posted_at < :as_of
      AND a.kind IN ('card', 'operator_held', 'operator_pending')
      AND e.asset IN ('points', 'cashback')
    GROUP BY e.asset
""")

# Net issued per source (a partner, or the operator: NULL) and asset, with the partner's issue
# price in force at the moment.
ISSUED = text("""
    SELECT a.partner_id, p.code AS partner_code, e.asset, -sum(e.amount) AS issued,
           (SELECT pr.issue_per_1000 FROM partner_prices pr
            WHERE pr.partner_id = a.partner_id AND pr.effective_from <= :as_of
            ORDER BY pr.effective_from DESC LIMIT 1) AS issue_per_1000
    FROM entries e
    JOIN transactions t ON t.id = e.transaction_id
    JOIN accounts a ON a.id = e.account_id
    LEFT JOIN partners p ON p.id = a.partner_id
    WHERE t.program_id = :program_id AND t.posted_at < :as_of
      AND a.kind IN ('partner_issued', 'operator_issued')
      AND e.asset IN ('points', 'cashback')
    GROUP BY a.partner_id, p.code, e.asset
""")

# Outstanding points by when they expire: each card's lots, the part its points cover.
EXPIRY_BUCKETS = text("""
    WITH totals AS (
        SELECT a.card_id, a.balance + a.held + a.pending AS total FROM accounts a
        JOIN cards c ON c.id = a.card_id
        WHERE c.program_id = :program_id AND a.kind = 'card' AND a.asset = 'points'
          AND a.balance + a.held + a.pending > 0
    ),
    lots AS (
        SELECT l.card_id, l.expires_on, l.amount,
               sum(l.amount) OVER (PARTITION BY l.card_id
                                   ORDER BY l.expires_on DESC, l.earned_on DESC) AS upto
        FROM point_lots l JOIN totals USING (card_id)
    ),
    parts AS (
        SELECT lots.expires_on,
               greatest(0, least(lots.amount, t.total - (lots.upto - lots.amount))) AS part
        FROM lots JOIN totals t USING (card_id)
    )
    SELECT coalesce(sum(part) FILTER (WHERE expires_on <= :today), 0) AS due,
           coalesce(sum(part) FILTER (WHERE expires_on > :today
                                        AND expires_on <= :today + 30), 0) AS within_30_days,
           coalesce(sum(part) FILTER (WHERE expires_on > :today + 30
                                        AND expires_on <= :today + 90), 0) AS within_90_days,
           coalesce(sum(part) FILTER (WHERE expires_on > :today + 90
                                        AND expires_on <= :today + 365), 0) AS within_365_days,
           coalesce(sum(part) FILTER (WHERE expires_on > :today + 365), 0) AS later_or_never
    FROM parts
""")


def shares(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights` (non-negative), in integers that add up to it:
    largest remainders, ties to the earlier weight."""
    positive = [max(w, 0) for w in weights]
    whole = sum(positive)
    if whole == 0 or total == 0:
        return [0] * len(weights)
    base = [total * w // whole for w in positive]
    remainders = sorted(range(len(weights)), key=lambda i: (-(total * positive[i] % whole), i))
    for i in remainders[: total - sum(base)]:
        base[i] += 1
    return base


async def outstanding(conn: AsyncConnection, program_id: int, as_of: datetime) -> dict[str, int]:
    rows = await conn.execute(OUTSTANDING, {"program_id": program_id, "as_of": as_of})
    found = {"points": 0, "cashback": 0}
    found.update({r.asset: int(r.outstanding) for r in rows})
    return found


async def issued(
    conn: AsyncConnection, program_id: int, as_of: datetime
) -> list[Row[tuple[object, ...]]]:
    return list(await conn.execute(ISSUED, {"program_id": program_id, "as_of": as_of}))


async def expiry_buckets(
    conn: AsyncConnection, program_id: int, today: date
) -> Row[tuple[object, ...]]:
    return (await conn.execute(EXPIRY_BUCKETS, {"program_id": program_id, "today": today})).one()

"""The audit's SQL: everything the ledger promises, recomputed from the entries."""

from sqlalchemy import TextClause, text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

COUNTS = text("""
    SELECT (SELECT count(*) FROM transactions WHERE program_id = :program_id) AS transactions,
           (SELECT count(*) FROM entries e JOIN accounts a ON a.id = e.account_id
             WHERE a.program_id = :program_id) AS entries,
           now() AS as_of
""")

ASSET_TOTALS = text("""
    SELECT e.asset, sum(e.amount) AS total
    FROM entries e JOIN accounts a ON a.id = e.account_id
    WHERE a.program_id = :program_id
    GROUP BY e.asset ORDER BY e.asset
""")

UNBALANCED = text("""
    SELECT e.transaction_id, e.asset, sum(e.amount) AS total, count(*) AS entries
    FROM entries e JOIN transactions t ON t.id = e.transaction_id
    WHERE t.program_id = :program_id
    GROUP BY e.transaction_id, e.asset
    HAVING sum(e.amount) <> 0
    ORDER BY e.transaction_id LIMIT :limit
""")

TOO_FEW_ENTRIES = text("""
    SELECT t.id AS transaction_id, count(e.id) AS entries
    FROM transactions t LEFT JOIN entries e ON e.transaction_id = t.id
    WHERE t.program_id = :program_id
    GROUP BY t.id HAVING count(e.id) < 2
    ORDER BY t.id LIMIT :limit
""")

CARD_BALANCE_MISMATCHES = text("""
    SELECT c.card_number, a.asset, a.balance AS stored, coalesce(sum(e.amount), 0) AS from_entries
    FROM accounts a
    JOIN cards c ON c.id = a.card_id
    LEFT JOIN entries e ON e.account_id = a.id
    WHERE a.program_id = :program_id AND a.kind = 'card'
    GROUP BY c.card_number, a.id
    HAVING a.balance <> coalesce(sum(e.amount), 0)
    ORDER BY c.card_number, a.asset LIMIT :limit
""")


# What holds reserve, two ways: each card account's `held` is the sum of its open holds, and
# the operator_held account (per asset) holds exactly what all open holds reserve.
HOLD_MISMATCHES = text("""
    SELECT c.card_number, a.asset, a.held AS stored,
           coalesce(sum(h.amount), 0) AS from_holds
    FROM accounts a
    JOIN cards c ON c.id = a.card_id
    LEFT JOIN holds h ON h.account_id = a.id AND h.status = 'open'
    WHERE a.program_id = :program_id AND a.kind = 'card'
    GROUP BY c.card_number, a.id
    HAVING a.held <> coalesce(sum(h.amount), 0)
    UNION ALL
    SELECT NULL, a.asset,
           (SELECT coalesce(sum(e.amount), 0) FROM entries e WHERE e.account_id = a.id),
           (SELECT coalesce(sum(h.amount), 0) FROM holds h
             WHERE h.program_id = a.program_id AND h.asset = a.asset AND h.status = 'open')
    FROM accounts a
    WHERE a.program_id = :program_id AND a.kind = 'operator_held'
      AND (SELECT coalesce(sum(e.amount), 0) FROM entries e WHERE e.account_id = a.id)
       <> (SELECT coalesce(sum(h.amount), 0) FROM holds h
            WHERE h.program_id = a.program_id AND h.asset = a.asset AND h.status = 'open')
    LIMIT :limit
""")


# Pending points, two ways: each card points account's `pending` is what its purchases still
# have waiting, and the operator_pending account holds exactly what all of them have waiting.
PENDING_MISMATCHES = text("""
    SELECT c.card_number, a.pending AS stored, coalesce(sum(w.remaining), 0) AS from_purchases
    FROM accounts a
    JOIN cards c ON c.id = a.card_id
    LEFT JOIN pending_points w ON w.account_id = a.id AND w.released_by IS NULL
    WHERE a.program_id = :program_id AND a.kind = 'card' AND a.asset = 'points'
    GROUP BY c.card_number, a.id
    HAVING a.pending <> coalesce(sum(w.remaining), 0)
    UNION ALL
    SELECT NULL,
           (SELECT coalesce(sum(e.amount), 0) FROM entries e WHERE e.account_id = a.id),
           (SELECT coalesce(sum(w.remaining), 0) FROM pending_points w
             WHERE w.program_id = a.program_id AND w.released_by IS NULL)
    FROM accounts a
    WHERE a.program_id = :program_id AND a.kind = 'operator_pending' AND a.asset = 'points'
      AND (SELECT coalesce(sum(e.amount), 0) FROM entries e WHERE e.account_id = a.id)
       <> (SELECT coalesce(sum(w.remaining), 0) FROM pending_points w
            WHERE w.program_id = a.program_id AND w.released_by IS NULL)
    LIMIT :limit
""")


async def fetch(
    conn: AsyncConnection, statement: TextClause, program_id: int, limit: int = 100
) -> list[Row[tuple[object, ...]]]:
    params = {"program_id": program_id, "limit": limit}
    return list(await conn.execute(statement, params))

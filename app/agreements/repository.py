"""The SQL of partners' prices (append-only, effective-dated)."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

COLUMNS = """
    partner_id, effective_from, issue_per_1000, reimbursement_per_1000, funds_cashback,
    fee_per_period, fee_bps, created_at
"""

# `effective_from` defaults to the database's now(), so "from now" is the same clock the
# postings' prices are looked up with; an explicit moment earlier than now() is refused.
INSERT = text(f"""
    INSERT INTO partner_prices (partner_id, effective_from, issue_per_1000,
                                reimbursement_per_1000, funds_cashback, fee_per_period, fee_bps,
                                api_key_id)
    SELECT p.id, coalesce(CAST(:effective_from AS timestamptz), now()), :issue_per_1000,
           :reimbursement_per_1000, :funds_cashback, :fee_per_period, :fee_bps, :api_key_id
    FROM partners p
    WHERE p.id = :partner_id AND p.program_id = :program_id
      AND coalesce(CAST(:effective_from AS timestamptz), now()) >= now()
    ON CONFLICT (partner_id, effective_from) DO NOTHING
    RETURNING {COLUMNS}
""")

LIST = text(f"""
    SELECT {COLUMNS} FROM partner_prices pr
    WHERE pr.partner_id = :partner_id
      AND EXISTS (SELECT 1 FROM partners p WHERE p.id = :partner_id AND p.program_id = :program_id)
    ORDER BY effective_from DESC
""")


async def insert(conn: AsyncConnection, **values: Any) -> Row[tuple[object, ...]] | None:
    return (await conn.execute(INSERT, values)).first()


async def prices(
    conn: AsyncConnection, program_id: int, partner_id: uuid.UUID
) -> list[Row[tuple[object, ...]]]:
    params = {"program_id": program_id, "partner_id": partner_id}
    return list(await conn.execute(LIST, params))


async def now(conn: AsyncConnection) -> datetime:
    value: datetime = (await conn.execute(text("SELECT now()"))).scalar_one()
    return value

"""reversals: a transaction type that undoes another, at most once

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 19:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint(op.f("ck_transactions_type_known"), "transactions", type_="check")
    op.create_check_constraint(
        op.f("ck_transactions_type_known"),
        "transactions",
        "type IN ('accrual', 'award', 'redemption', 'transfer', 'reversal')",
    )
    op.create_index(
        "uq_transactions_one_reversal",
        "transactions",
        ["corrects_id"],
        unique=True,
        postgresql_where=sa.text("type = 'reversal'"),
    )


def downgrade() -> None:
    op.drop_index("uq_transactions_one_reversal", table_name="transactions")
    op.drop_constraint(op.f("ck_transactions_type_known"), "transactions", type_="check")
    op.create_check_constraint(
        op.f("ck_transactions_type_known"),
        "transactions",
        "type IN ('accrual', 'award', 'redemption', 'transfer')",
    )

"""redemption refunds: a transaction type that gives back what a redemption spent

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 19:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint(op.f("ck_transactions_type_known"), "transactions", type_="check")
    op.create_check_constraint(
        op.f("ck_transactions_type_known"),
        "transactions",
        "type IN ('accrual', 'award', 'redemption', 'transfer', 'reversal', 'refund')",
    )
    # Refunds of one redemption are summed under the card's lock: find them fast.
    op.create_index(
        "ix_transactions_corrects_id",
        "transactions",
        ["corrects_id"],
        postgresql_where=sa.text("corrects_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_transactions_corrects_id", table_name="transactions")
    op.drop_constraint(op.f("ck_transactions_type_known"), "transactions", type_="check")
    op.create_check_constraint(
        op.f("ck_transactions_type_known"),
        "transactions",
        "type IN ('accrual', 'award', 'redemption', 'transfer', 'reversal')",
    )

"""expired cohorts: which month's points each expiry took, for breakage by cohort

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "expired_points",
        sa.Column("transaction_id", sa.Uuid(), nullable=False),
        sa.Column("earned_month", sa.Date(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("points > 0", name=op.f("ck_expired_points_points_positive")),
        sa.ForeignKeyConstraint(
            ["transaction_id"], ["transactions.id"], name=op.f("fk_expired_points_transaction")
        ),
        sa.PrimaryKeyConstraint("transaction_id", "earned_month", name=op.f("pk_expired_points")),
    )
    op.execute(
        "CREATE TRIGGER expired_points_append_only BEFORE UPDATE OR DELETE ON expired_points "
        "FOR EACH ROW EXECUTE FUNCTION ledger_forbid_mutation()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER expired_points_append_only ON expired_points")
    op.drop_table("expired_points")

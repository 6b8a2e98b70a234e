"""card life: closed cards, replacement links, transfers between cards

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("cards", sa.Column("replaced_by_card_id", sa.BigInteger(), nullable=True))
    op.add_column("cards", sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_foreign_key(
        op.f("fk_cards_replaced_by_card_id_cards"),
        "cards",
        "cards",
        ["replaced_by_card_id"],
        ["id"],
    )
    op.drop_constraint(op.f("ck_cards_status_known"), "cards", type_="check")
    op.create_check_constraint(
        op.f("ck_cards_status_known"), "cards", "status IN ('active', 'blocked', 'closed')"
    )

    op.add_column("transactions", sa.Column("counterparty_card_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_transactions_counterparty_card_id_cards"),
        "transactions",
        "cards",
        ["counterparty_card_id"],
        ["id"],
    )
    op.create_index(
        "ix_transactions_counterparty_history",
        "transactions",
        ["counterparty_card_id", sa.text("posted_at DESC"), sa.text("id DESC")],
        postgresql_where=sa.text("counterparty_card_id IS NOT NULL"),
    )
    op.drop_constraint(op.f("ck_transactions_type_known"), "transactions", type_="check")
    op.create_check_constraint(
        op.f("ck_transactions_type_known"),
        "transactions",
        "type IN ('accrual', 'award', 'redemption', 'transfer')",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_transactions_type_known"), "transactions", type_="check")
    op.create_check_constraint(
        op.f("ck_transactions_type_known"),
        "transactions",
        "type IN ('accrual', 'award', 'redemption')",
    )
    op.drop_index("ix_transactions_counterparty_history", table_name="transactions")
    op.drop_constraint(
        op.f("fk_transactions_counterparty_card_id_cards"), "transactions", type_="foreignkey"
    )
    op.drop_column("transactions", "counterparty_card_id")
    op.drop_constraint(op.f("ck_cards_status_known"), "cards", type_="check")
    op.create_check_constraint(
        op.f("ck_cards_status_known"), "cards", "status IN ('active', 'blocked')"
    )
    op.drop_constraint(op.f("fk_cards_replaced_by_card_id_cards"), "cards", type_="foreignkey")
    op.drop_column("cards", "closed_at")
    op.drop_column("cards", "replaced_by_card_id")
    op.drop_column("accounts", "closed_at")

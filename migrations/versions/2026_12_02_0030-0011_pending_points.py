"""pending points: what a purchase earned waits out the partner's return window

- `partners.return_window_days` (and in each earn rule version): points earned there become
  spendable that many days after the purchase (0: at once).
- Until then they sit in a new `operator_pending` system account; the card account's new
  `pending` column counts them, and `pending_points` says whose they are and from when they
  are spendable. A `maturity` transaction moves them to the card; a return in the window takes
  them back from there first.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 00:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TYPES = (
    "'accrual', 'award', 'redemption', 'transfer', 'reversal', 'refund', "
    "'hold', 'capture', 'release', 'expiry'"
)
KINDS = (
    "'card', 'partner_issued', 'partner_redeemed', 'operator_issued', 'operator_redeemed', "
    "'operator_held', 'operator_breakage'"
)


def upgrade() -> None:
    for table in ("partners", "earn_rules"):
        op.add_column(
            table,
            sa.Column("return_window_days", sa.Integer(), server_default="0", nullable=False),
        )
        op.create_check_constraint(
            op.f(f"ck_{table}_return_window_days_range"),
            table,
            "return_window_days >= 0 AND return_window_days <= 365",
        )

    op.add_column("accounts", sa.Column("pending", sa.BigInteger(), nullable=True))
    op.execute("UPDATE accounts SET pending = 0 WHERE kind = 'card'")
    op.create_check_constraint(
        op.f("ck_accounts_pending_iff_card"), "accounts", "(kind = 'card') = (pending IS NOT NULL)"
    )
    op.create_check_constraint(op.f("ck_accounts_pending_non_negative"), "accounts", "pending >= 0")
    op.drop_constraint(op.f("ck_accounts_kind_known"), "accounts", type_="check")
    op.create_check_constraint(
        op.f("ck_accounts_kind_known"), "accounts", f"kind IN ({KINDS}, 'operator_pending')"
    )
    op.drop_constraint(op.f("ck_transactions_type_known"), "transactions", type_="check")
    op.create_check_constraint(
        op.f("ck_transactions_type_known"), "transactions", f"type IN ({TYPES}, 'maturity')"
    )

    op.create_table(
        "pending_points",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.SmallInteger(), nullable=False),
        sa.Column("card_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("spendable_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_by", sa.Uuid(), nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_pending_points_amount_positive")),
        sa.CheckConstraint(
            "remaining >= 0 AND remaining <= amount", name=op.f("ck_pending_points_remaining")
        ),
        sa.ForeignKeyConstraint(
            ["id"], ["transactions.id"], name=op.f("fk_pending_points_id_transactions")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_pending_points_program_id_programs")
        ),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_pending_points_card_id_cards")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_pending_points_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["released_by"],
            ["transactions.id"],
            name=op.f("fk_pending_points_released_by_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_points")),
    )
    op.create_index(
        "ix_pending_points_waiting_card",
        "pending_points",
        ["card_id", "spendable_at"],
        postgresql_where=sa.text("released_by IS NULL AND remaining > 0"),
    )
    op.create_index(
        "ix_pending_points_waiting",
        "pending_points",
        ["spendable_at"],
        postgresql_where=sa.text("released_by IS NULL AND remaining > 0"),
    )


def downgrade() -> None:
    op.drop_index("ix_pending_points_waiting", table_name="pending_points")
    op.drop_index("ix_pending_points_waiting_card", table_name="pending_points")
    op.drop_table("pending_points")
    op.execute("DELETE FROM accounts WHERE kind = 'operator_pending'")
    op.drop_constraint(op.f("ck_transactions_type_known"), "transactions", type_="check")
    op.create_check_constraint(
        op.f("ck_transactions_type_known"), "transactions", f"type IN ({TYPES})"
    )
    op.drop_constraint(op.f("ck_accounts_kind_known"), "accounts", type_="check")
    op.create_check_constraint(op.f("ck_accounts_kind_known"), "accounts", f"kind IN ({KINDS})")
    op.drop_constraint(op.f("ck_accounts_pending_non_negative"), "accounts", type_="check")
    op.drop_constraint(op.f("ck_accounts_pending_iff_card"), "accounts", type_="check")
    op.drop_column("accounts", "pending")
    for table in ("partners", "earn_rules"):
        op.drop_constraint(op.f(f"ck_{table}_return_window_days_range"), table, type_="check")
        op.drop_column(table, "return_window_days")

"""settlement: periods, statements and payments, posted to the ledger in money

- `money` is a third asset, for settlement only: minor units of the program currency owed
  between the operator and the partners. `partner_settlement` (one per partner) and
  `operator_settlement` accounts hold it; a partner that owes has a negative balance.
- `settlement_periods`: the periods closed so far. `statements`: one per partner and period
  with anything to settle, immutable, with its `statement_lines`; `settled_transactions` says
  which statement counted each posting (a posting counts once: one that commits after its
  period closed lands in the next statement, as late).
- `payments`: money received from or sent to a partner.
- Transaction types `statement` and `payment`.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TYPES = (
    "'accrual', 'award', 'redemption', 'transfer', 'reversal', 'refund', "
    "'hold', 'capture', 'release', 'expiry', 'maturity'"
)
KINDS = (
    "'card', 'partner_issued', 'partner_redeemed', 'operator_issued', 'operator_redeemed', "
    "'operator_held', 'operator_breakage', 'operator_pending'"
)
APPEND_ONLY = ("statements", "statement_lines", "settled_transactions", "payments")


def _replace_check(table: str, name: str, condition: str) -> None:
    op.drop_constraint(op.f(name), table, type_="check")
    op.create_check_constraint(op.f(name), table, condition)


def upgrade() -> None:
    _replace_check(
        "accounts", "ck_accounts_asset_known", "asset IN ('points', 'cashback', 'money')"
    )
    _replace_check("entries", "ck_entries_asset_known", "asset IN ('points', 'cashback', 'money')")
    _replace_check(
        "accounts",
        "ck_accounts_kind_known",
        f"kind IN ({KINDS}, 'partner_settlement', 'operator_settlement')",
    )
    _replace_check(
        "transactions", "ck_transactions_type_known", f"type IN ({TYPES}, 'statement', 'payment')"
    )

    op.create_table(
        "settlement_periods",
        sa.Column("program_id", sa.SmallInteger(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "closed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint("period_start < period_end", name=op.f("ck_settlement_periods_window")),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_settlement_periods_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("program_id", "period_start", name=op.f("pk_settlement_periods")),
    )
    op.create_table(
        "statements",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.SmallInteger(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("net_amount", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(net_amount = 0) = (transaction_id IS NULL)", name=op.f("ck_statements_posted_iff_net")
        ),
        sa.ForeignKeyConstraint(
            ["program_id", "period_start"],
            ["settlement_periods.program_id", "settlement_periods.period_start"],
            name=op.f("fk_statements_period"),
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_statements_partner_id_partners")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"], ["transactions.id"], name=op.f("fk_statements_transaction_id")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_statements")),
        sa.UniqueConstraint(
            "partner_id", "period_start", name=op.f("uq_statements_partner_period")
        ),
    )
    op.create_table(
        "statement_lines",
        sa.Column("statement_id", sa.Uuid(), nullable=False),
        sa.Column("line_no", sa.SmallInteger(), nullable=False),
        sa.Column("kind", sa.String(length=48), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("points_price", sa.BigInteger(), nullable=True),
        sa.Column("postings", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["statement_id"], ["statements.id"], name=op.f("fk_statement_lines_statement_id")
        ),
        sa.PrimaryKeyConstraint("statement_id", "line_no", name=op.f("pk_statement_lines")),
    )
    op.create_table(
        "settled_transactions",
        sa.Column("transaction_id", sa.Uuid(), nullable=False),
        sa.Column("statement_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["transactions.id"],
            name=op.f("fk_settled_transactions_transaction"),
        ),
        sa.ForeignKeyConstraint(
            ["statement_id"], ["statements.id"], name=op.f("fk_settled_transactions_statement")
        ),
        sa.PrimaryKeyConstraint("transaction_id", name=op.f("pk_settled_transactions")),
    )
    op.create_index("ix_settled_transactions_statement", "settled_transactions", ["statement_id"])
    op.create_table(
        "payments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.SmallInteger(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("statement_id", sa.Uuid(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("api_key_id", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_payments_amount_non_zero")),
        sa.ForeignKeyConstraint(
            ["id"], ["transactions.id"], name=op.f("fk_payments_id_transactions")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_payments_partner_id_partners")
        ),
        sa.ForeignKeyConstraint(
            ["statement_id"], ["statements.id"], name=op.f("fk_payments_statement_id_statements")
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_payments_api_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("partner_id", "reference", name=op.f("uq_payments_partner_reference")),
    )
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_forbid_mutation()"
        )


def downgrade() -> None:
    for table in reversed(APPEND_ONLY):
        op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
    op.drop_table("payments")
    op.drop_index("ix_settled_transactions_statement", table_name="settled_transactions")
    op.drop_table("settled_transactions")
    op.drop_table("statement_lines")
    op.drop_table("statements")
    op.drop_table("settlement_periods")
    op.execute("DELETE FROM accounts WHERE kind IN ('partner_settlement', 'operator_settlement')")
    _replace_check("transactions", "ck_transactions_type_known", f"type IN ({TYPES})")
    _replace_check("accounts", "ck_accounts_kind_known", f"kind IN ({KINDS})")
    _replace_check("entries", "ck_entries_asset_known", "asset IN ('points', 'cashback')")
    _replace_check("accounts", "ck_accounts_asset_known", "asset IN ('points', 'cashback')")

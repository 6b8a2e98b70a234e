"""holds and clawbacks: value reserved for an order; returns that take back what was earned

- `holds`: the state of each hold; its value moves in the ledger (hold, capture, release
  transactions) through a new operator_held system account, and the card account's new `held`
  column counts what its open holds reserve.
- `purchase_returns`: goods returned against an accrual, each one, even when too small to take
  anything back yet.
- A card's balance may now go below zero, but only by a clawback: a deferred trigger refuses
  the commit of any other database transaction that lowers a balance below zero.
- Transactions the service posts itself (a hold's expiry) have no API key.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TYPES = "'accrual', 'award', 'redemption', 'transfer', 'reversal', 'refund'"
NEW_TYPES = TYPES + ", 'hold', 'capture', 'release'"
KINDS = "'card', 'partner_issued', 'partner_redeemed', 'operator_issued', 'operator_redeemed'"

# Only refunds and reversals take value back from a card, and they are the clawbacks: a card
# account pushed below zero by any other database transaction fails its commit. A transfer may
# carry a debt that exists already to the card that replaces or absorbs it (the transfer API
# itself never moves more than the giving card has). Deferred, so it sees the transaction rows
# that the same statement inserts; the WHEN clause keeps every other balance update from
# queueing anything.
CHECK_NEGATIVE = """
CREATE FUNCTION ledger_check_negative_balance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM entries e JOIN transactions t ON t.id = e.transaction_id
        WHERE e.account_id = NEW.id AND e.amount < 0
          AND t.type IN ('refund', 'reversal', 'transfer')
          AND t.xmin = pg_current_xact_id()::xid
    ) THEN
        RAISE EXCEPTION 'account % would hold %: only a clawback may overdraw a card',
            NEW.id, NEW.balance USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.drop_constraint(op.f("ck_accounts_balance_non_negative"), "accounts", type_="check")
    op.execute(CHECK_NEGATIVE)
    op.execute("""
        CREATE CONSTRAINT TRIGGER accounts_negative_only_by_clawback
        AFTER UPDATE OF balance ON accounts
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
        WHEN (NEW.balance < 0 AND NEW.balance < OLD.balance)
        EXECUTE FUNCTION ledger_check_negative_balance()
    """)

    op.add_column("accounts", sa.Column("held", sa.BigInteger(), nullable=True))
    op.execute("UPDATE accounts SET held = 0 WHERE kind = 'card'")
    op.create_check_constraint(
        op.f("ck_accounts_held_iff_card"), "accounts", "(kind = 'card') = (held IS NOT NULL)"
    )
    op.create_check_constraint(op.f("ck_accounts_held_non_negative"), "accounts", "held >= 0")
    op.drop_constraint(op.f("ck_accounts_kind_known"), "accounts", type_="check")
    op.create_check_constraint(
        op.f("ck_accounts_kind_known"), "accounts", f"kind IN ({KINDS}, 'operator_held')"
    )

    op.alter_column("transactions", "api_key_id", nullable=True)
    op.drop_constraint(op.f("ck_transactions_type_known"), "transactions", type_="check")
    op.create_check_constraint(
        op.f("ck_transactions_type_known"), "transactions", f"type IN ({NEW_TYPES})"
    )

    op.create_table(
        "holds",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.SmallInteger(), nullable=False),
        sa.Column("card_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=True),
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("asset", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("captured_amount", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("settled_by", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'captured', 'voided', 'expired')",
            name=op.f("ck_holds_status_known"),
        ),
        sa.CheckConstraint("asset IN ('points', 'cashback')", name=op.f("ck_holds_asset_known")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_holds_amount_positive")),
        sa.CheckConstraint(
            "captured_amount >= 0 AND captured_amount <= amount",
            name=op.f("ck_holds_captured_within_amount"),
        ),
        sa.CheckConstraint(
            "(status = 'open') = (settled_at IS NULL)", name=op.f("ck_holds_settled_iff_not_open")
        ),
        sa.CheckConstraint(
            "(status = 'captured') = (captured_amount IS NOT NULL)", name=op.f("ck_holds_captured")
        ),
        sa.ForeignKeyConstraint(["id"], ["transactions.id"], name=op.f("fk_holds_id_transactions")),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_holds_program_id_programs")
        ),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name=op.f("fk_holds_card_id_cards")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_holds_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_holds_partner_id_partners")
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_holds_api_key_id_api_keys")
        ),
        sa.ForeignKeyConstraint(
            ["settled_by"], ["transactions.id"], name=op.f("fk_holds_settled_by_transactions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_holds")),
    )
    op.create_index(
        "ix_holds_open_card", "holds", ["card_id"], postgresql_where=sa.text("status = 'open'")
    )
    op.create_index(
        "ix_holds_open_expiry", "holds", ["expires_at"], postgresql_where=sa.text("status = 'open'")
    )
    op.create_index("ix_holds_card", "holds", ["card_id", sa.text("created_at DESC")])

    op.create_table(
        "purchase_returns",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("accrual_id", sa.Uuid(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", sa.Uuid(), nullable=True),
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_purchase_returns_amount_positive")),
        sa.ForeignKeyConstraint(
            ["accrual_id"],
            ["transactions.id"],
            name=op.f("fk_purchase_returns_accrual_id_transactions"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["transactions.id"],
            name=op.f("fk_purchase_returns_transaction_id_transactions"),
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_purchase_returns_api_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchase_returns")),
    )
    op.create_index(op.f("ix_purchase_returns_accrual_id"), "purchase_returns", ["accrual_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_purchase_returns_accrual_id"), table_name="purchase_returns")
    op.drop_table("purchase_returns")
    op.drop_index("ix_holds_card", table_name="holds")
    op.drop_index("ix_holds_open_expiry", table_name="holds")
    op.drop_index("ix_holds_open_card", table_name="holds")
    op.drop_table("holds")
    op.drop_constraint(op.f("ck_transactions_type_known"), "transactions", type_="check")
    op.create_check_constraint(
        op.f("ck_transactions_type_known"), "transactions", f"type IN ({TYPES})"
    )
    op.alter_column("transactions", "api_key_id", nullable=False)
    # The held accounts go with holds (refused by their entries' foreign key if any hold was
    # ever taken: that history cannot be downgraded away).
    op.execute("DELETE FROM accounts WHERE kind = 'operator_held'")
    op.drop_constraint(op.f("ck_accounts_kind_known"), "accounts", type_="check")
    op.create_check_constraint(op.f("ck_accounts_kind_known"), "accounts", f"kind IN ({KINDS})")
    op.drop_constraint(op.f("ck_accounts_held_non_negative"), "accounts", type_="check")
    op.drop_constraint(op.f("ck_accounts_held_iff_card"), "accounts", type_="check")
    op.drop_column("accounts", "held")
    op.execute("DROP TRIGGER accounts_negative_only_by_clawback ON accounts")
    op.execute("DROP FUNCTION ledger_check_negative_balance()")
    op.create_check_constraint(op.f("ck_accounts_balance_non_negative"), "accounts", "balance >= 0")

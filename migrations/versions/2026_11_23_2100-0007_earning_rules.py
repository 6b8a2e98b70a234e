"""earning rules: versioned partner earn rules with exclusions, tiers, and what each accrual
earned by which rule

- `earn_rules`: every version of a partner's earn rule (rates and exclusions), append-only;
  the partner row keeps the current one (`earn_rule_version`) for the posting engine.
- `tier_ladders`: every version of the program's tier ladder, append-only.
- `cards.tier`: the card's tier; `card_spend`: qualifying spend per card and month.
- `transactions.eligible_amount`: what of a purchase earned (after exclusions and what was
  paid with points), so returns can reduce qualifying spend in proportion.
- `earnings`: per accrual, each rule that applied and what it added.
- `purchase_returns.partner_id`: a return's reference is unique per partner.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TEXT_ARRAY = postgresql.ARRAY(sa.String(length=64))


def upgrade() -> None:
    op.add_column(
        "partners",
        sa.Column("earn_rule_version", sa.Integer(), server_default="1", nullable=False),
    )
    op.add_column(
        "partners",
        sa.Column("excluded_categories", TEXT_ARRAY, server_default="{}", nullable=False),
    )
    op.add_column(
        "partners", sa.Column("excluded_skus", TEXT_ARRAY, server_default="{}", nullable=False)
    )
    op.create_table(
        "earn_rules",
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("earn_points", sa.Integer(), nullable=False),
        sa.Column("earn_per_amount", sa.BigInteger(), nullable=False),
        sa.Column("cashback_bps", sa.Integer(), nullable=False),
        sa.Column("excluded_categories", TEXT_ARRAY, nullable=False),
        sa.Column("excluded_skus", TEXT_ARRAY, nullable=False),
        sa.Column("api_key_id", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_earn_rules_partner_id_partners")
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_earn_rules_api_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("partner_id", "version", name=op.f("pk_earn_rules")),
    )
    op.execute("""
        INSERT INTO earn_rules (partner_id, version, earn_points, earn_per_amount, cashback_bps,
                                excluded_categories, excluded_skus, created_at)
        SELECT id, 1, earn_points, earn_per_amount, cashback_bps, '{}', '{}', created_at
        FROM partners
    """)

    op.create_table(
        "tier_ladders",
        sa.Column("program_id", sa.SmallInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("window_months", sa.SmallInteger(), nullable=False),
        sa.Column("tiers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("api_key_id", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "window_months BETWEEN 1 AND 60", name=op.f("ck_tier_ladders_window_months_range")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_tier_ladders_program_id_programs")
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_tier_ladders_api_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("program_id", "version", name=op.f("pk_tier_ladders")),
    )
    op.add_column("cards", sa.Column("tier", sa.String(length=32), nullable=True))
    op.add_column("cards", sa.Column("tier_since", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "card_spend",
        sa.Column("card_id", sa.BigInteger(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_card_spend_card_id_cards")
        ),
        sa.PrimaryKeyConstraint("card_id", "month", name=op.f("pk_card_spend")),
    )

    op.add_column("transactions", sa.Column("eligible_amount", sa.BigInteger(), nullable=True))
    op.create_table(
        "earnings",
        sa.Column("transaction_id", sa.Uuid(), nullable=False),
        sa.Column("rule", sa.String(length=16), nullable=False),
        sa.Column("rule_ref", sa.String(length=64), nullable=False),
        sa.Column("rule_version", sa.Integer(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("cashback", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("rule IN ('base', 'tier')", name=op.f("ck_earnings_rule_known")),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["transactions.id"],
            name=op.f("fk_earnings_transaction_id_transactions"),
        ),
        # One index: written with every accrual, so no more than the lookups by transaction
        # need (the rules report scans by the transactions' posting time).
        sa.PrimaryKeyConstraint("transaction_id", "rule", "rule_ref", name=op.f("pk_earnings")),
    )

    # A return's receipt number is the partner's, like every other: once per partner.
    op.add_column("purchase_returns", sa.Column("partner_id", sa.Uuid(), nullable=True))
    op.create_foreign_key(
        op.f("fk_purchase_returns_partner_id_partners"),
        "purchase_returns",
        "partners",
        ["partner_id"],
        ["id"],
    )
    op.execute("""
        UPDATE purchase_returns r SET partner_id = t.partner_id
        FROM transactions t WHERE t.id = r.accrual_id
    """)
    op.create_index(
        "uq_purchase_returns_partner_reference",
        "purchase_returns",
        ["partner_id", "reference"],
        unique=True,
        postgresql_where=sa.text("reference IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_purchase_returns_partner_reference", table_name="purchase_returns")
    op.drop_constraint(
        op.f("fk_purchase_returns_partner_id_partners"), "purchase_returns", type_="foreignkey"
    )
    op.drop_column("purchase_returns", "partner_id")
    op.drop_table("earnings")
    op.drop_column("transactions", "eligible_amount")
    op.drop_table("card_spend")
    op.drop_column("cards", "tier_since")
    op.drop_column("cards", "tier")
    op.drop_table("tier_ladders")
    op.drop_table("earn_rules")
    op.drop_column("partners", "excluded_skus")
    op.drop_column("partners", "excluded_categories")
    op.drop_column("partners", "earn_rule_version")

"""campaigns: time-boxed bonuses (multipliers, first purchase, win-back, stamp cards,
birthdays) with scopes and budgets; a personalized card's birth date

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.SmallInteger(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("points_pct", sa.Integer(), nullable=False),
        sa.Column("bonus_points", sa.BigInteger(), nullable=False),
        sa.Column("quiet_days", sa.Integer(), nullable=True),
        sa.Column("stamps_needed", sa.Integer(), nullable=True),
        sa.Column("min_amount", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=True),
        sa.Column("categories", postgresql.ARRAY(sa.String(length=64)), nullable=True),
        sa.Column("tiers", postgresql.ARRAY(sa.String(length=32)), nullable=True),
        sa.Column("funded_by", sa.String(length=16), nullable=False),
        sa.Column("budget_points", sa.BigInteger(), nullable=True),
        sa.Column("spent_points", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("api_key_id", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "kind IN ('multiplier', 'first_purchase', 'win_back', 'stamps', 'birthday')",
            name=op.f("ck_campaigns_kind_known"),
        ),
        sa.CheckConstraint(
            "funded_by IN ('operator', 'partner')", name=op.f("ck_campaigns_funded_by_known")
        ),
        # Empty once ended before it started (ends_at = starts_at).
        sa.CheckConstraint("starts_at <= ends_at", name=op.f("ck_campaigns_window")),
        sa.CheckConstraint(
            "(kind = 'win_back') = (quiet_days IS NOT NULL)",
            name=op.f("ck_campaigns_quiet_days_iff_win_back"),
        ),
        sa.CheckConstraint(
            "(kind = 'stamps') = (stamps_needed IS NOT NULL)",
            name=op.f("ck_campaigns_stamps_needed_iff_stamps"),
        ),
        sa.CheckConstraint(
            "(kind = 'birthday') = (window_days IS NOT NULL)",
            name=op.f("ck_campaigns_window_days_iff_birthday"),
        ),
        sa.CheckConstraint(
            "spent_points >= 0 AND (budget_points IS NULL OR spent_points <= budget_points)",
            name=op.f("ck_campaigns_within_budget"),
        ),
        sa.CheckConstraint(
            "funded_by = 'operator' OR partner_id IS NOT NULL",
            name=op.f("ck_campaigns_partner_funds_its_own"),
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_campaigns_program_id_programs")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_campaigns_partner_id_partners")
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_campaigns_api_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint("program_id", "code", name="uq_campaigns_program_code"),
    )
    op.create_index("ix_campaigns_window", "campaigns", ["program_id", "ends_at"])
    op.create_table(
        "card_stamps",
        sa.Column("campaign_id", sa.Uuid(), nullable=False),
        sa.Column("card_id", sa.BigInteger(), nullable=False),
        sa.Column("stamps", sa.Integer(), nullable=False),
        sa.CheckConstraint("stamps >= 0", name=op.f("ck_card_stamps_stamps_non_negative")),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_card_stamps_campaign_id_campaigns")
        ),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_card_stamps_card_id_cards")
        ),
        sa.PrimaryKeyConstraint("campaign_id", "card_id", name=op.f("pk_card_stamps")),
    )
    op.drop_constraint(op.f("ck_earnings_rule_known"), "earnings", type_="check")
    op.create_check_constraint(
        op.f("ck_earnings_rule_known"), "earnings", "rule IN ('base', 'tier', 'campaign')"
    )
    op.add_column("cards", sa.Column("birth_date", sa.Date(), nullable=True))
    op.create_check_constraint(
        op.f("ck_cards_birth_date_personalized"),
        "cards",
        "birth_date IS NULL OR kind = 'personalized'",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_cards_birth_date_personalized"), "cards", type_="check")
    op.drop_column("cards", "birth_date")
    op.drop_constraint(op.f("ck_earnings_rule_known"), "earnings", type_="check")
    op.create_check_constraint(
        op.f("ck_earnings_rule_known"), "earnings", "rule IN ('base', 'tier')"
    )
    op.drop_table("card_stamps")
    op.drop_index("ix_campaigns_window", table_name="campaigns")
    op.drop_table("campaigns")

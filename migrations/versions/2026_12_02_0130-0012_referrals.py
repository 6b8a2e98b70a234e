"""referrals: a card may be issued as referred by another; referral campaigns reward both

- `cards.referred_by_card_id`: the card whose customer brought this one; `referral_open` while
  the new card has not made its first purchase (until then its postings also lock the
  referrer's accounts, which a referral bonus credits).
- `campaigns.referrer_points`: what a referral campaign gives the referrer (its `bonus_points`
  go to the new card).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = "'multiplier', 'first_purchase', 'win_back', 'stamps', 'birthday'"


def upgrade() -> None:
    op.add_column("cards", sa.Column("referred_by_card_id", sa.BigInteger(), nullable=True))
    op.add_column(
        "cards",
        sa.Column("referral_open", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_foreign_key(
        op.f("fk_cards_referred_by_card_id_cards"),
        "cards",
        "cards",
        ["referred_by_card_id"],
        ["id"],
    )
    op.create_check_constraint(
        op.f("ck_cards_referral_open_needs_referrer"),
        "cards",
        "NOT referral_open OR referred_by_card_id IS NOT NULL",
    )
    op.create_check_constraint(
        op.f("ck_cards_not_referred_by_itself"), "cards", "referred_by_card_id <> id"
    )
    op.add_column(
        "campaigns",
        sa.Column("referrer_points", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_campaigns_referrer_points_non_negative"), "campaigns", "referrer_points >= 0"
    )
    op.drop_constraint(op.f("ck_campaigns_kind_known"), "campaigns", type_="check")
    op.create_check_constraint(
        op.f("ck_campaigns_kind_known"), "campaigns", f"kind IN ({KINDS}, 'referral')"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_campaigns_kind_known"), "campaigns", type_="check")
    op.execute("DELETE FROM campaigns WHERE kind = 'referral'")
    op.create_check_constraint(op.f("ck_campaigns_kind_known"), "campaigns", f"kind IN ({KINDS})")
    op.drop_constraint(
        op.f("ck_campaigns_referrer_points_non_negative"), "campaigns", type_="check"
    )
    op.drop_column("campaigns", "referrer_points")
    op.drop_constraint(op.f("ck_cards_not_referred_by_itself"), "cards", type_="check")
    op.drop_constraint(op.f("ck_cards_referral_open_needs_referrer"), "cards", type_="check")
    op.drop_constraint(op.f("fk_cards_referred_by_card_id_cards"), "cards", type_="foreignkey")
    op.drop_column("cards", "referral_open")
    op.drop_column("cards", "referred_by_card_id")

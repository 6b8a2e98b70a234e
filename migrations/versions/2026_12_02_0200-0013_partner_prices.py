"""prices: what a partner pays per point its customers earn, and is paid per point redeemed

- `partner_prices`: effective-dated terms per partner (append-only: a change is a new row from
  its date on): the issue price and the reimbursement, per 1,000 points in minor units of the
  program currency; whether the partner funds the cashback it grants; and its fees.
- `transactions.points_price`: the price per 1,000 points in force for the transaction's
  partner when it happened (issue price for what it issued, reimbursement for what it accepted),
  so a statement never depends on today's prices; `cashback_funded`, whether the partner
  funded the cashback of a purchase then. Corrections carry their original's.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "partner_prices",
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issue_per_1000", sa.BigInteger(), nullable=False),
        sa.Column("reimbursement_per_1000", sa.BigInteger(), nullable=False),
        sa.Column("funds_cashback", sa.Boolean(), nullable=False),
        sa.Column("fee_per_period", sa.BigInteger(), nullable=False),
        sa.Column("fee_bps", sa.Integer(), nullable=False),
        sa.Column("api_key_id", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "issue_per_1000 >= 0 AND reimbursement_per_1000 >= 0",
            name=op.f("ck_partner_prices_prices_non_negative"),
        ),
        sa.CheckConstraint("fee_per_period >= 0", name=op.f("ck_partner_prices_fee_non_negative")),
        sa.CheckConstraint(
            "fee_bps BETWEEN 0 AND 10000", name=op.f("ck_partner_prices_fee_bps_range")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_partner_prices_partner_id_partners")
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_partner_prices_api_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("partner_id", "effective_from", name=op.f("pk_partner_prices")),
    )
    op.add_column("transactions", sa.Column("points_price", sa.BigInteger(), nullable=True))
    op.add_column("transactions", sa.Column("cashback_funded", sa.Boolean(), nullable=True))
    op.create_check_constraint(
        op.f("ck_transactions_points_price_non_negative"), "transactions", "points_price >= 0"
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("ck_transactions_points_price_non_negative"), "transactions", type_="check"
    )
    op.drop_column("transactions", "cashback_funded")
    op.drop_column("transactions", "points_price")
    op.drop_table("partner_prices")

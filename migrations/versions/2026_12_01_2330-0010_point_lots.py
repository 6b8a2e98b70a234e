"""expiry: points earned are tracked as lots, and expired points go to a breakage account

- `point_lots`: what a card earned, per day earned and day it expires (`'infinity'` when the
  policy in force at earning had no expiry). Spending never touches a lot: the points a card
  still has are always its newest lots (first in, first out), so the lots its balance no longer
  covers are the spent ones (app/expiry/policy.py).
- Points already on cards when lots were introduced never expire: each card gets one lot of
  what it holds, expiring at 'infinity' (the old terms promised no expiry).
- An `operator_breakage` system account receives what expires, by `expiry` transactions.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TYPES = (
    "'accrual', 'award', 'redemption', 'transfer', 'reversal', 'refund', "
    "'hold', 'capture', 'release'"
)
KINDS = (
    "'card', 'partner_issued', 'partner_redeemed', 'operator_issued', 'operator_redeemed', "
    "'operator_held'"
)


def upgrade() -> None:
    op.create_table(
        "point_lots",
        sa.Column("card_id", sa.BigInteger(), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=False),
        sa.Column("earned_on", sa.Date(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_point_lots_amount_positive")),
        sa.CheckConstraint("expires_on > earned_on", name=op.f("ck_point_lots_expires_after")),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_point_lots_card_id_cards")
        ),
        # (card_id, expires_on) first: "has this card anything due" is one index probe.
        sa.PrimaryKeyConstraint("card_id", "expires_on", "earned_on", name=op.f("pk_point_lots")),
    )
    op.create_index("ix_point_lots_expires_on", "point_lots", ["expires_on"])
    op.execute("""
        INSERT INTO point_lots (card_id, expires_on, earned_on, amount)
        SELECT card_id, 'infinity', current_date, sum(balance + held) FROM accounts
        WHERE kind = 'card' AND asset = 'points' GROUP BY card_id HAVING sum(balance + held) > 0
    """)

    op.drop_constraint(op.f("ck_transactions_type_known"), "transactions", type_="check")
    op.create_check_constraint(
        op.f("ck_transactions_type_known"), "transactions", f"type IN ({TYPES}, 'expiry')"
    )
    op.drop_constraint(op.f("ck_accounts_kind_known"), "accounts", type_="check")
    op.create_check_constraint(
        op.f("ck_accounts_kind_known"), "accounts", f"kind IN ({KINDS}, 'operator_breakage')"
    )


def downgrade() -> None:
    op.execute("DELETE FROM accounts WHERE kind = 'operator_breakage'")
    op.drop_constraint(op.f("ck_accounts_kind_known"), "accounts", type_="check")
    op.create_check_constraint(op.f("ck_accounts_kind_known"), "accounts", f"kind IN ({KINDS})")
    op.drop_constraint(op.f("ck_transactions_type_known"), "transactions", type_="check")
    op.create_check_constraint(
        op.f("ck_transactions_type_known"), "transactions", f"type IN ({TYPES})"
    )
    op.drop_index("ix_point_lots_expires_on", table_name="point_lots")
    op.drop_table("point_lots")

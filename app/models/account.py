import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, created_at_column
from app.models.enums import MONEY, AccountKind, Asset, sql_in


class Account(Base):
    """One asset held by one party: a card, a partner (issued or redeemed side), or the operator.

    Only card accounts keep a running `balance`, updated under a row lock by each posting.
    System accounts (partner, operator) sit on the other side of every posting; giving them a
    locked running balance would serialize all postings of a busy partner, so their balance is
    derived from their entries instead (see docs/ARCHITECTURE.md)."""

    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint(f"kind IN ({sql_in(AccountKind)})", name="kind_known"),
        CheckConstraint(f"asset IN ({sql_in(Asset)}, '{MONEY}')", name="asset_known"),
        CheckConstraint("(kind = 'card') = (card_id IS NOT NULL)", name="card_id_iff_card"),
        CheckConstraint(
            "(kind LIKE 'partner_%') = (partner_id IS NOT NULL)", name="partner_id_iff_partner"
        ),
        CheckConstraint("(kind = 'card') = (balance IS NOT NULL)", name="balance_iff_card"),
        CheckConstraint("(kind = 'card') = (held IS NOT NULL)", name="held_iff_card"),
        CheckConstraint("held >= 0", name="held_non_negative"),
        CheckConstraint("(kind = 'card') = (pending IS NOT NULL)", name="pending_iff_card"),
        CheckConstraint("pending >= 0", name="pending_non_negative"),
        # A card's balance goes below zero only by a clawback (a deferred trigger checks it,
        # migration 0006): never by spending.
        # Target of the entries (account_id, asset) foreign key: an entry's asset must be
        # its account's asset.
        UniqueConstraint("id", "asset", name="uq_accounts_id_asset"),
        Index(
            "uq_accounts_card_asset",
            "card_id",
            "asset",
            unique=True,
            postgresql_where=text("card_id IS NOT NULL"),
        ),
        Index(
            "uq_accounts_partner_kind_asset",
            "partner_id",
            "kind",
            "asset",
            unique=True,
            postgresql_where=text("partner_id IS NOT NULL"),
        ),
        Index(
            "uq_accounts_operator_kind_asset",
            "program_id",
            "kind",
            "asset",
            unique=True,
            postgresql_where=text("kind LIKE 'operator_%'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    program_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("programs.id"))
    kind: Mapped[str] = mapped_column(String(32))
    asset: Mapped[str] = mapped_column(String(16))
    card_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("cards.id"))
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("partners.id"))
    balance: Mapped[int | None] = mapped_column(BigInteger)
    """Card accounts only: points, or minor units of cashback, the card holds now, outside
    its open holds. Negative only by a clawback: a debt that later earnings pay off."""
    held: Mapped[int | None] = mapped_column(BigInteger)
    """Card accounts only: what the card's open holds reserve (sitting in the operator_held
    account). Open holds past their expiry still count here until they are released."""
    pending: Mapped[int | None] = mapped_column(BigInteger)
    """Card accounts only: points earned but not spendable yet (a partner's return window),
    sitting in the operator_pending account; pending_points says until when."""
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """Card accounts of a closed card. Set under the account's row lock, so a posting that
    waited for that lock sees it (the card row it read earlier may be older)."""
    created_at: Mapped[datetime] = created_at_column()

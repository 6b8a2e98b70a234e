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
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, created_at_column
from app.models.enums import Asset, HoldStatus, sql_in


class Hold(Base):
    """Value reserved on a card for an order, until captured, voided or expired.

    The value itself moves in the ledger (a `hold` transaction from the card's account to the
    operator_held account, then a `capture` and/or `release`); this row is the hold's state.
    It changes only under the lock of the card's accounts, and only from `open`."""

    __tablename__ = "holds"
    __table_args__ = (
        CheckConstraint(f"status IN ({sql_in(HoldStatus)})", name="status_known"),
        CheckConstraint(f"asset IN ({sql_in(Asset)})", name="asset_known"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(
            "captured_amount >= 0 AND captured_amount <= amount", name="captured_within_amount"
        ),
        CheckConstraint("(status = 'open') = (settled_at IS NULL)", name="settled_iff_not_open"),
        CheckConstraint("(status = 'captured') = (captured_amount IS NOT NULL)", name="captured"),
        # What a card's open holds reserve, and which have run out (the balance, the sweep).
        Index("ix_holds_open_card", "card_id", postgresql_where=text("status = 'open'")),
        Index("ix_holds_open_expiry", "expires_at", postgresql_where=text("status = 'open'")),
        Index("ix_holds_card", "card_id", text("created_at DESC")),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("transactions.id"), primary_key=True)
    """The `hold` transaction's id."""
    program_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("programs.id"))
    card_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("cards.id"))
    """The card it is reserved on (moves with the hold when the card is replaced or merged)."""
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id"))
    """The card's account it is reserved from, and released back to."""
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("partners.id"))
    api_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id"))
    asset: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    reference: Mapped[str] = mapped_column(String(64))
    """The order number."""
    status: Mapped[str] = mapped_column(String(16))
    captured_amount: Mapped[int | None] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When it stopped being open."""
    settled_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("transactions.id"))
    """The capture, or the release, that ended it."""

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, created_at_column


class PurchaseReturn(Base):
    """Goods worth `amount` of an accrual's purchase came back.

    Every return is recorded here, including one too small to take anything back yet: what an
    accrual's returns take back is computed from their running total (see
    app/ledger/accrual_refunds.py), so the total must count them all."""

    __tablename__ = "purchase_returns"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        # A return's receipt number posts once per partner, whether or not it took anything.
        Index(
            "uq_purchase_returns_partner_reference",
            "partner_id",
            "reference",
            unique=True,
            postgresql_where=text("reference IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    accrual_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("transactions.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    """Minor units of the purchase's currency."""
    transaction_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("transactions.id"))
    """The `refund` transaction that took value back; NULL when the return took nothing."""
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("partners.id"))
    """The accrual's partner."""
    api_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id"))
    reference: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = created_at_column()

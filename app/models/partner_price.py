import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, DateTime, ForeignKey, Integer
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, created_at_column


class PartnerPrice(Base):
    """A partner's terms from `effective_from` on (append-only: a change is a new row). Prices
    are per 1,000 points, in minor units of the program currency (1,000 = 1 cent a point)."""

    __tablename__ = "partner_prices"
    __table_args__ = (
        CheckConstraint(
            "issue_per_1000 >= 0 AND reimbursement_per_1000 >= 0", name="prices_non_negative"
        ),
        CheckConstraint("fee_per_period >= 0", name="fee_non_negative"),
        CheckConstraint("fee_bps BETWEEN 0 AND 10000", name="fee_bps_range"),
    )

    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"), primary_key=True)
    effective_from: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    issue_per_1000: Mapped[int] = mapped_column(BigInteger)
    """What the partner pays for 1,000 points its customers earn."""
    reimbursement_per_1000: Mapped[int] = mapped_column(BigInteger)
    """What the partner is paid for 1,000 points redeemed with it."""
    funds_cashback: Mapped[bool] = mapped_column(Boolean)
    """Whether the partner pays for the cashback it grants (else the operator does)."""
    fee_per_period: Mapped[int] = mapped_column(BigInteger)
    """A fixed fee per settlement period, minor units."""
    fee_bps: Mapped[int] = mapped_column(Integer)
    """A fee in basis points of the value of the points the partner issued in the period."""
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_keys.id"))
    created_at: Mapped[datetime] = created_at_column()

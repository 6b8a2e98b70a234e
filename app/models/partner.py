import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    SmallInteger,
    String,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, created_at_column


class Partner(Base):
    """A business in the coalition where cards earn and/or redeem."""

    __tablename__ = "partners"
    __table_args__ = (
        CheckConstraint("earn_points >= 0", name="earn_points_non_negative"),
        CheckConstraint("earn_per_amount > 0", name="earn_per_amount_positive"),
        CheckConstraint("cashback_bps BETWEEN 0 AND 10000", name="cashback_bps_range"),
        UniqueConstraint("program_id", "code", name="uq_partners_program_code"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    program_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("programs.id"), index=True)
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    earn_points: Mapped[int] = mapped_column(Integer)
    """Points earned per `earn_per_amount` spent."""
    earn_per_amount: Mapped[int] = mapped_column(BigInteger)
    """Spend, in minor units of the program currency, that earns `earn_points` points."""
    cashback_bps: Mapped[int] = mapped_column(Integer)
    """Cashback in basis points of the purchase amount (250 = 2.5%)."""
    can_earn: Mapped[bool] = mapped_column(Boolean)
    can_redeem: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = created_at_column()

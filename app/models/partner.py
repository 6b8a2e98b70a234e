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
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, created_at_column


class Partner(Base):
    """A business in the coalition where cards earn and/or redeem."""

    __tablename__ = "partners"
    __table_args__ = (
        CheckConstraint("earn_points >= 0", name="earn_points_non_negative"),
        CheckConstraint("earn_per_amount > 0", name="earn_per_amount_positive"),
        CheckConstraint("cashback_bps BETWEEN 0 AND 10000", name="cashback_bps_range"),
        CheckConstraint(
            "return_window_days >= 0 AND return_window_days <= 365",
            name="return_window_days_range",
        ),
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
    earn_rule_version: Mapped[int] = mapped_column(Integer, server_default="1")
    """The current version of the partner's earn rule (earn_rules keeps every version; the
    rates and exclusions here are that version's, for the posting engine)."""
    excluded_categories: Mapped[list[str]] = mapped_column(ARRAY(String(64)), server_default="{}")
    """Basket lines in these categories earn nothing (gift cards, tobacco)."""
    excluded_skus: Mapped[list[str]] = mapped_column(ARRAY(String(64)), server_default="{}")
    can_earn: Mapped[bool] = mapped_column(Boolean)
    can_redeem: Mapped[bool] = mapped_column(Boolean)
    return_window_days: Mapped[int] = mapped_column(Integer, server_default="0")
    """Points earned here are pending this many days after the purchase (its return window)."""
    created_at: Mapped[datetime] = created_at_column()


class EarnRule(Base):
    """One version of a partner's earn rule. Append-only: a change is a new version, and each
    accrual records the version it earned by (`earnings`)."""

    __tablename__ = "earn_rules"
    __table_args__ = (
        CheckConstraint(
            "return_window_days >= 0 AND return_window_days <= 365",
            name="return_window_days_range",
        ),
    )

    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    earn_points: Mapped[int] = mapped_column(Integer)
    earn_per_amount: Mapped[int] = mapped_column(BigInteger)
    cashback_bps: Mapped[int] = mapped_column(Integer)
    excluded_categories: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    excluded_skus: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    return_window_days: Mapped[int] = mapped_column(Integer, server_default="0")
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_keys.id"))
    created_at: Mapped[datetime] = created_at_column()

import uuid
from datetime import date

from sqlalchemy import BigInteger, CheckConstraint, Date, ForeignKey, Index, PrimaryKeyConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class PointLot(Base):
    """What a card earned on one day and when it expires (app/expiry/policy.py). Spending never
    touches a lot: a card's points are always its newest lots, first in, first out."""

    __tablename__ = "point_lots"
    __table_args__ = (
        # (card_id, expires_on) first: "has this card anything due" is one index probe.
        PrimaryKeyConstraint("card_id", "expires_on", "earned_on"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("expires_on > earned_on", name="expires_after"),
        Index("ix_point_lots_expires_on", "expires_on"),
    )

    card_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("cards.id"))
    expires_on: Mapped[date] = mapped_column(Date)
    """The day the points expire, at its start, in the program's time zone; 'infinity': never."""
    earned_on: Mapped[date] = mapped_column(Date)
    amount: Mapped[int] = mapped_column(BigInteger)


class ExpiredPoints(Base):
    """What one expiry transaction took, per month the points were earned in (their cohort):
    the oldest lots it covered, first in, first out. Breakage by cohort reads it."""

    __tablename__ = "expired_points"
    __table_args__ = (CheckConstraint("points > 0", name="points_positive"),)

    transaction_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("transactions.id", name="fk_expired_points_transaction"), primary_key=True
    )
    earned_month: Mapped[date] = mapped_column(Date, primary_key=True)
    """The first day of the month."""
    points: Mapped[int] = mapped_column(BigInteger)

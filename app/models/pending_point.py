import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, SmallInteger, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base

_WAITING = text("released_by IS NULL AND remaining > 0")


class PendingPoints(Base):
    """The points a purchase (`id`, its accrual) earned while they wait out the partner's return
    window. Changes only under the card's lock: a return takes from `remaining`, the maturity
    posting releases it (app/pending/)."""

    __tablename__ = "pending_points"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("remaining >= 0 AND remaining <= amount", name="remaining"),
        Index(
            "ix_pending_points_waiting_card", "card_id", "spendable_at", postgresql_where=_WAITING
        ),
        Index("ix_pending_points_waiting", "spendable_at", postgresql_where=_WAITING),
    )

    id: Mapped[uuid.UUID] = mapped_column(ForeignKey("transactions.id"), primary_key=True)
    program_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("programs.id"))
    card_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("cards.id"))
    account_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    """What is still pending: the amount less what returns took back."""
    spendable_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    released_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("transactions.id"))
    """The maturity transaction that moved `remaining` to the card."""

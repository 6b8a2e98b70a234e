import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, SmallInteger
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, created_at_column


class TierLadder(Base):
    """One version of the program's tier ladder. Append-only: the newest version applies, and
    each accrual records the version its tier bonus came from (`earnings`)."""

    __tablename__ = "tier_ladders"
    __table_args__ = (
        CheckConstraint("window_months BETWEEN 1 AND 60", name="window_months_range"),
    )

    program_id: Mapped[int] = mapped_column(
        SmallInteger, ForeignKey("programs.id"), primary_key=True
    )
    version: Mapped[int] = mapped_column(primary_key=True)
    window_months: Mapped[int] = mapped_column(SmallInteger)
    """Qualifying spend counts the purchases of this many calendar months, this one included."""
    tiers: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    """[{code, name, threshold, points_bonus_pct, cashback_bonus_bps}], lowest first; the
    lowest has threshold 0 (validated by app/rules/schemas.py)."""
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_keys.id"))
    created_at: Mapped[datetime] = created_at_column()

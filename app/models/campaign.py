import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, created_at_column


class Campaign(Base):
    """A time-boxed bonus on purchases. Its terms never change once created (ending it early
    is a new version); `spent_points` counts what it granted, under the row's lock, so a
    budget is never overspent however many tills earn at once."""

    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('multiplier', 'first_purchase', 'win_back', 'stamps', 'birthday', "
            "'referral')",
            name="kind_known",
        ),
        CheckConstraint("referrer_points >= 0", name="referrer_points_non_negative"),
        CheckConstraint(
            "(kind = 'win_back') = (quiet_days IS NOT NULL)", name="quiet_days_iff_win_back"
        ),
        CheckConstraint(
            "(kind = 'stamps') = (stamps_needed IS NOT NULL)", name="stamps_needed_iff_stamps"
        ),
        CheckConstraint(
            "(kind = 'birthday') = (window_days IS NOT NULL)", name="window_days_iff_birthday"
        ),
        CheckConstraint("funded_by IN ('operator', 'partner')", name="funded_by_known"),
        # Empty once ended before it started (ends_at = starts_at).
        CheckConstraint("starts_at <= ends_at", name="window"),
        CheckConstraint(
            "spent_points >= 0 AND (budget_points IS NULL OR spent_points <= budget_points)",
            name="within_budget",
        ),
        CheckConstraint(
            "funded_by = 'operator' OR partner_id IS NOT NULL", name="partner_funds_its_own"
        ),
        UniqueConstraint("program_id", "code", name="uq_campaigns_program_code"),
        Index("ix_campaigns_window", "program_id", "ends_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    program_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("programs.id"))
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    """`multiplier`: extra points in percent of the base; `first_purchase`: a fixed bonus on a
    card's first purchase; `win_back`: a fixed bonus on the first purchase of a card that had
    none for `quiet_days`; `stamps`: a stamp per purchase of at least `min_amount`, and a fixed
    bonus on every `stamps_needed`-th; `birthday`: a fixed bonus on a personalized card's
    first purchase in the `window_days` from its birthday, once a year."""
    points_pct: Mapped[int] = mapped_column(Integer)
    bonus_points: Mapped[int] = mapped_column(BigInteger)
    quiet_days: Mapped[int | None] = mapped_column(Integer)
    stamps_needed: Mapped[int | None] = mapped_column(Integer)
    min_amount: Mapped[int] = mapped_column(BigInteger, server_default="1")
    """Stamps: the eligible amount a purchase needs to earn a stamp."""
    window_days: Mapped[int | None] = mapped_column(Integer)
    """Birthday: how many days after the birthday a purchase still earns the bonus."""
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("partners.id"))
    """Only purchases at this partner (NULL: at any)."""
    categories: Mapped[list[str] | None] = mapped_column(ARRAY(String(64)))
    """Multipliers: only the eligible part of basket lines in these categories (NULL: all)."""
    tiers: Mapped[list[str] | None] = mapped_column(ARRAY(String(32)))
    """Only cards in these tiers (NULL: any)."""
    funded_by: Mapped[str] = mapped_column(String(16))
    budget_points: Mapped[int | None] = mapped_column(BigInteger)
    referrer_points: Mapped[int] = mapped_column(BigInteger, server_default="0")
    """Referral campaigns: the referrer's bonus (`bonus_points` go to the new card)."""
    spent_points: Mapped[int] = mapped_column(BigInteger, server_default="0")
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_keys.id"))
    created_at: Mapped[datetime] = created_at_column()


class CardStamps(Base):
    """A card's stamps on a stamp-card campaign since its last reward. Changed only under the
    card's account locks, with the purchases (and returns) that add or remove a stamp."""

    __tablename__ = "card_stamps"
    __table_args__ = (CheckConstraint("stamps >= 0", name="stamps_non_negative"),)

    campaign_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    card_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("cards.id"), primary_key=True)
    stamps: Mapped[int] = mapped_column(Integer)

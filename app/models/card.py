import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    SmallInteger,
    String,
    UniqueConstraint,
    false,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, created_at_column
from app.models.enums import CardKind, CardStatus, sql_in


class Card(Base):
    """A customer's identity in the program. Balances live in its two accounts."""

    __tablename__ = "cards"
    __table_args__ = (
        CheckConstraint(f"kind IN ({sql_in(CardKind)})", name="kind_known"),
        CheckConstraint(f"status IN ({sql_in(CardStatus)})", name="status_known"),
        CheckConstraint("card_number ~ '^[0-9]{8,19}$'", name="card_number_digits"),
        CheckConstraint(
            "(kind = 'personalized') = (customer_reference IS NOT NULL)",
            name="customer_reference_iff_personalized",
        ),
        UniqueConstraint("program_id", "card_number", name="uq_cards_program_card_number"),
        CheckConstraint(
            "birth_date IS NULL OR kind = 'personalized'", name="birth_date_personalized"
        ),
        CheckConstraint(
            "NOT referral_open OR referred_by_card_id IS NOT NULL",
            name="referral_open_needs_referrer",
        ),
        CheckConstraint("referred_by_card_id <> id", name="not_referred_by_itself"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    program_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("programs.id"))
    card_number: Mapped[str] = mapped_column(String(19))
    kind: Mapped[str] = mapped_column(String(16))
    customer_reference: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16))
    issued_by_partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("partners.id"))
    replaced_by_card_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("cards.id"))
    """Closed cards that were replaced or merged: the card that holds their value now."""
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    birth_date: Mapped[date | None] = mapped_column(Date)
    """Personalized cards: the customer's birth date, for birthday campaigns."""
    tier: Mapped[str | None] = mapped_column(String(32))
    """The card's tier code in the program's ladder (NULL: no ladder yet, or the lowest tier
    before the card's first purchase). Up at once when a purchase crosses a threshold; down
    only by `loyalty-ledger tiers`."""
    tier_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    referred_by_card_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("cards.id"))
    """The card whose customer brought this one (referral campaigns)."""
    referral_open: Mapped[bool] = mapped_column(Boolean, server_default=false())
    """Referred, and no purchase yet: the card's postings also lock the referrer's accounts
    (its first purchase may credit the referrer). Cleared by the first purchase."""
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class CardSpend(Base):
    """Qualifying spend of a card per calendar month (UTC): the tier window sums the last N
    months. Written under the card's account locks, with each purchase and return."""

    __tablename__ = "card_spend"

    card_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("cards.id"), primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    """The first day of the month."""
    amount: Mapped[int] = mapped_column(BigInteger)

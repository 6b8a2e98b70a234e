"""Settlement between the operator and the partners (app/settlement/). Statements, their
lines, what they settled and payments are append-only (triggers, migration 0014)."""

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    SmallInteger,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, created_at_column


class SettlementPeriod(Base):
    """A period that was closed: its statements exist, and it is never closed again."""

    __tablename__ = "settlement_periods"
    __table_args__ = (CheckConstraint("period_start < period_end", name="window"),)

    program_id: Mapped[int] = mapped_column(
        SmallInteger, ForeignKey("programs.id"), primary_key=True
    )
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Statement(Base):
    """One partner's statement for one period: its lines and one net amount."""

    __tablename__ = "statements"
    __table_args__ = (
        CheckConstraint("(net_amount = 0) = (transaction_id IS NULL)", name="posted_iff_net"),
        ForeignKeyConstraint(
            ["program_id", "period_start"],
            ["settlement_periods.program_id", "settlement_periods.period_start"],
            name="fk_statements_period",
        ),
        UniqueConstraint("partner_id", "period_start", name="uq_statements_partner_period"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(SmallInteger)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"))
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    net_amount: Mapped[int] = mapped_column(BigInteger)
    """Minor units: positive, the partner pays the operator; negative, the operator pays."""
    transaction_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("transactions.id", name="fk_statements_transaction_id")
    )
    """The `statement` posting of the net amount (none when it is zero)."""
    created_at: Mapped[datetime] = created_at_column()


class StatementLine(Base):
    __tablename__ = "statement_lines"

    statement_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("statements.id", name="fk_statement_lines_statement_id"), primary_key=True
    )
    line_no: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(48))
    late: Mapped[bool] = mapped_column(Boolean)
    """Postings of an earlier period that arrived after it closed."""
    points_price: Mapped[int | None] = mapped_column(BigInteger)
    postings: Mapped[int] = mapped_column(Integer)
    quantity: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)


class SettledTransaction(Base):
    __tablename__ = "settled_transactions"
    __table_args__ = (Index("ix_settled_transactions_statement", "statement_id"),)

    transaction_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("transactions.id", name="fk_settled_transactions_transaction"),
        primary_key=True,
    )
    statement_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("statements.id", name="fk_settled_transactions_statement")
    )


class Payment(Base):
    """Money received from a partner (positive) or sent to it (negative)."""

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="amount_non_zero"),
        UniqueConstraint("partner_id", "reference", name="uq_payments_partner_reference"),
    )

    id: Mapped[uuid.UUID] = mapped_column(ForeignKey("transactions.id"), primary_key=True)
    program_id: Mapped[int] = mapped_column(SmallInteger)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"))
    statement_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("statements.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    reference: Mapped[str] = mapped_column(String(64))
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_keys.id"))
    created_at: Mapped[datetime] = created_at_column()

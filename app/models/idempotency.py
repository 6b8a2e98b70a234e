import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, SmallInteger, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, created_at_column


class IdempotencyRecord(Base):
    """The first answer to a value-moving request, replayed for retries with the same key.

    The row is inserted first in the request's transaction: a concurrent duplicate blocks on
    the primary key until the first request commits, then replays its answer."""

    __tablename__ = "idempotency_keys"
    # The retention purge pages through the oldest records (app/idempotency/retention.py).
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)

    api_key_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("api_keys.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    """SHA-256 of method, path and canonical JSON body.
    The same key with another body is refused."""
    response_status: Mapped[int | None] = mapped_column(SmallInteger)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The exact bytes first sent (bytea, not jsonb, which would reorder keys)."""
    created_at: Mapped[datetime] = created_at_column()

import uuid
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    LargeBinary,
    SmallInteger,
    String,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, created_at_column
from app.models.enums import ApiKeyRole, sql_in


class ApiKey(Base):
    """A credential. Only a SHA-256 of the secret is stored: keys are 256-bit random strings,
    so a slow password hash would add latency to every request and no safety."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(f"role IN ({sql_in(ApiKeyRole)})", name="role_known"),
        CheckConstraint("(role = 'partner') = (partner_id IS NOT NULL)", name="partner_iff_role"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    program_id: Mapped[int] = mapped_column(SmallInteger, ForeignKey("programs.id"))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    partner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("partners.id"))
    key_prefix: Mapped[str] = mapped_column(String(16))
    """The first characters of the key, shown in listings so a person can tell keys apart."""
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[datetime] = created_at_column()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

from datetime import datetime

from sqlalchemy import SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, created_at_column


class Program(Base):
    """A loyalty program: one points currency and its cashback currency.

    A deployment serves the program named in its settings; every other table carries a
    program id so that a second program needs no schema change."""

    __tablename__ = "programs"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    """ISO 4217 code of cashback and purchase amounts."""
    timezone: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = created_at_column()

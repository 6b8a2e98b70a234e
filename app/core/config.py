"""Settings, read from the environment (and a `.env` file when present)."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="postgresql:// URL. Unset: an embedded PostgreSQL is started in data_dir.",
    )
    data_dir: Path = Path(".data")

    # The program this deployment serves. Everything in the database carries a program id,
    # so a second program is a second row, not a rewrite.
    program_code: str = "default"
    program_name: str = "Loyalty Program"
    program_currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    program_timezone: str = "UTC"

    # Generated card numbers: this prefix, random digits, and a Luhn check digit.
    card_number_prefix: str = Field(default="7", pattern=r"^[0-9]{1,6}$")
    card_number_length: int = Field(default=16, ge=12, le=19)

    max_body_bytes: int = 64 * 1024
    # A batch of 1,000 postings is about 250 KB of JSON.
    max_batch_body_bytes: int = 1024 * 1024
    # How far back a till may date a posting it made while offline, and how far ahead of our
    # clock its clock may run.
    max_backdate_days: int = 365
    max_clock_skew_seconds: int = 300

    # Group commit: concurrent postings share a database transaction. Executors per process
    # run groups in parallel; a group takes at most this many requests.
    posting_executors: int = 2
    posting_max_group: int = 64

    # Every process releases holds whose time to live ran out this often (0: never; then run
    # `loyalty-ledger sweep-holds` from a scheduler). Lapsed holds stop counting at once anyway.
    hold_sweep_seconds: float = Field(default=60.0, ge=0)
    # Every process reviews the cards' tiers this often (0: never; then run
    # `loyalty-ledger tiers` daily). Purchases move cards up at once; the review moves them down.
    tier_review_seconds: float = Field(default=6 * 3600.0, ge=0)

    # Idempotency records older than this are purged, this often, by every process (0: never;
    # then run `loyalty-ledger purge-idempotency`).
    idempotency_retention_days: int = Field(default=30, ge=1)
    idempotency_purge_seconds: float = Field(default=3600.0, ge=0)

    # Every process releases pending points whose return window passed this often (0: never;
    # then run `loyalty-ledger release-pending`). They count as spendable at once anyway.
    pending_release_seconds: float = Field(default=300.0, ge=0)

    # The settlement period, in the program's time zone (daily, weekly from Monday, monthly),
    # and how often each process closes the periods that ended (0: never; then run
    # `loyalty-ledger settle`, or POST /v1/settlements/close). Closing twice is harmless.
    settlement_period: Literal["daily", "weekly", "monthly"] = "monthly"
    settlement_close_seconds: float = Field(default=3600.0, ge=0)

    # Points expire this many months after the day they were earned (0: never). A change applies
    # to points earned from then on: each lot keeps the expiry it was earned with.
    points_expiry_months: int = Field(default=0, ge=0, le=1200)
    # All of a card's points also expire after this many months with no purchase, redemption
    # or hold on it (0: never).
    points_inactivity_months: int = Field(default=0, ge=0, le=1200)
    # Every process runs expiry this often (0: never; then run `loyalty-ledger expire` from a
    # scheduler). Expired points stop counting at once anyway.
    expiry_run_seconds: float = Field(default=3600.0, ge=0)

    db_pool_size: int = 20
    db_max_overflow: int = 10


@lru_cache
def get_settings() -> Settings:
    return Settings()

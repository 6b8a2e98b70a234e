from datetime import datetime
from itertools import pairwise
from typing import Annotated

from pydantic import Field, model_validator

from app.core.schemas import MAX_AMOUNT, RequestModel, ResponseModel

TierCode = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", examples=["gold"])]


class TierDefinition(RequestModel):
    code: TierCode
    name: Annotated[str, Field(min_length=1, max_length=100, examples=["Gold"])]
    threshold: Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)] = Field(
        description="Qualifying spend over the window (minor units) from which a card has "
        "this tier. The lowest tier's is 0."
    )
    points_bonus_pct: Annotated[int, Field(strict=True, ge=0, le=1_000)] = Field(
        default=0,
        description="Extra points in percent of what the partner's rule grants (50: half "
        "as many again).",
    )
    cashback_bonus_bps: Annotated[int, Field(strict=True, ge=0, le=10_000)] = Field(
        default=0, description="Extra cashback in basis points of the eligible amount."
    )


class TierLadderCreate(RequestModel):
    """A new version of the program's tier ladder. It applies to purchases from now on;
    what past purchases earned never changes."""

    window_months: Annotated[int, Field(strict=True, ge=1, le=60)] = Field(
        default=12,
        description="Qualifying spend counts purchases of this many calendar months, the "
        "current one included.",
    )
    tiers: Annotated[list[TierDefinition], Field(min_length=1, max_length=20)] = Field(
        description="Lowest first: thresholds strictly increasing, the first one 0."
    )

    @model_validator(mode="after")
    def _a_ladder(self) -> "TierLadderCreate":
        if self.tiers[0].threshold != 0:
            raise ValueError("the lowest tier's threshold must be 0")
        thresholds = [t.threshold for t in self.tiers]
        if any(a >= b for a, b in pairwise(thresholds)):
            raise ValueError("thresholds must increase strictly from one tier to the next")
        if len({t.code for t in self.tiers}) != len(self.tiers):
            raise ValueError("tier codes must be unique")
        return self


class TierRead(ResponseModel):
    code: str
    name: str
    threshold: int
    points_bonus_pct: int
    cashback_bonus_bps: int


class TierLadderRead(ResponseModel):
    version: int
    window_months: int
    tiers: list[TierRead]
    created_at: datetime


class CardTierRead(ResponseModel):
    """Where a card stands on the ladder."""

    code: str
    name: str
    since: datetime | None = Field(description="When the card got this tier (null: never moved).")
    qualifying_spend: int = Field(description="Over the ladder's window, minor units.")
    next_tier: str | None = Field(description="Null at the top.")
    to_next_tier: int | None = Field(description="Qualifying spend still needed for next_tier.")

import uuid
from datetime import datetime
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, model_validator

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


CampaignCode = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", examples=["double-may"])]


class CampaignCreate(RequestModel):
    """A time-boxed bonus on purchases. Its terms cannot change once created; end it early with
    POST /v1/campaigns/{id}/end."""

    code: CampaignCode
    name: Annotated[str, Field(min_length=1, max_length=200)]
    kind: Literal["multiplier", "first_purchase", "win_back", "stamps", "birthday", "referral"]
    points_pct: Annotated[int, Field(strict=True, ge=0, le=1_000)] = Field(
        default=0,
        description="multiplier: extra points in percent of what the partner's rule grants "
        "(100: double points).",
    )
    bonus_points: Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)] = Field(
        default=0,
        description="first_purchase, win_back: points on the card's first purchase, or on the "
        "first after `quiet_days` without one. referral: the referred card's bonus on its "
        "first purchase.",
    )
    referrer_points: Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)] = Field(
        default=0,
        description="referral: the referring card's bonus when the card it referred makes its "
        "first purchase (in a separate award transaction on the referring card).",
    )
    quiet_days: Annotated[int, Field(strict=True, ge=1, le=3_650)] | None = Field(
        default=None, description="win_back: days without a purchase that make a card quiet."
    )
    stamps_needed: Annotated[int, Field(strict=True, ge=2, le=100)] | None = Field(
        default=None,
        description="stamps: every this-many-th stamped purchase earns `bonus_points` (buy "
        "nine, the tenth is on us: 10).",
    )
    min_amount: Annotated[int, Field(strict=True, ge=1, le=MAX_AMOUNT)] = Field(
        default=1, description="stamps: the eligible amount a purchase needs for a stamp."
    )
    window_days: Annotated[int, Field(strict=True, ge=0, le=31)] | None = Field(
        default=None,
        description="birthday: how many days after the birthday (in the program's time zone) "
        "the first purchase still earns the bonus; 0: the day itself. A 29 February birthday "
        "is on 28 February in other years.",
    )
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    partner_id: uuid.UUID | None = Field(
        default=None, description="Only purchases at this partner."
    )
    categories: (
        Annotated[
            list[Annotated[str, Field(min_length=1, max_length=64)]],
            Field(min_length=1, max_length=100),
        ]
        | None
    ) = Field(
        default=None,
        description="multiplier: only the basket lines in these categories (purchases without "
        "lines do not qualify).",
    )
    tiers: Annotated[list[TierCode], Field(min_length=1, max_length=20)] | None = Field(
        default=None, description="Only cards in these tiers."
    )
    funded_by: Literal["operator", "partner"] = Field(
        default="operator",
        description="Who pays for the bonus points: the operator, or the campaign's partner.",
    )
    budget_points: Annotated[int, Field(strict=True, gt=0, le=MAX_AMOUNT)] | None = Field(
        default=None,
        description="Stop once this many points were granted (the purchase that reaches it "
        "gets what is left).",
    )

    @model_validator(mode="after")
    def _coherent(self) -> "CampaignCreate":
        if self.starts_at >= self.ends_at:
            raise ValueError("starts_at must be before ends_at")
        if self.kind == "multiplier" and (self.points_pct == 0 or self.bonus_points):
            raise ValueError("a multiplier needs points_pct > 0 and no bonus_points")
        if self.kind == "referral":
            if self.points_pct or not (self.bonus_points or self.referrer_points):
                raise ValueError("a referral needs bonus_points or referrer_points, no points_pct")
            if self.categories is not None:
                raise ValueError("categories apply to multipliers only")
        elif self.referrer_points:
            raise ValueError("referrer_points is for referral campaigns")
        fixed = self.kind in ("first_purchase", "win_back", "stamps", "birthday")
        if fixed and (self.bonus_points == 0 or self.points_pct):
            raise ValueError(f"a {self.kind} campaign needs bonus_points > 0, no points_pct")
        if fixed and self.categories is not None:
            raise ValueError("categories apply to multipliers only")
        if (self.kind == "win_back") != (self.quiet_days is not None):
            raise ValueError("quiet_days is for win_back campaigns, which need it")
        if (self.kind == "stamps") != (self.stamps_needed is not None):
            raise ValueError("stamps_needed is for stamps campaigns, which need it")
        if (self.kind == "birthday") != (self.window_days is not None):
            raise ValueError("window_days is for birthday campaigns, which need it")
        if self.kind == "stamps" and self.partner_id is None:
            raise ValueError("a stamp card is a partner's: it needs partner_id")
        if self.funded_by == "partner" and self.partner_id is None:
            raise ValueError("a campaign the partner funds must name the partner (partner_id)")
        return self


class CampaignRead(ResponseModel):
    id: uuid.UUID
    code: str
    name: str
    kind: str
    points_pct: int
    bonus_points: int
    quiet_days: int | None
    stamps_needed: int | None
    min_amount: int
    window_days: int | None
    starts_at: datetime
    ends_at: datetime
    partner_id: uuid.UUID | None
    categories: list[str] | None
    tiers: list[str] | None
    funded_by: str
    budget_points: int | None
    referrer_points: int
    spent_points: int = Field(description="Bonus points granted so far.")
    version: int
    created_at: datetime

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import Field

from app.core.schemas import ResponseModel


class RuleCost(ResponseModel):
    rule: Literal["base", "tier", "campaign"]
    rule_ref: str = Field(description="The partner's id, the tier's code, or the campaign's.")
    name: str | None = Field(description="The partner's or the campaign's name.")
    purchases: int = Field(description="Purchases the rule added to.")
    cards: int = Field(description="Distinct cards it reached.")
    points: int = Field(description="Points it granted.")
    cashback: int = Field(description="Cashback it granted, in minor units.")
    points_value: int = Field(
        description="The points' money value at the issue price each purchase recorded "
        "(minor units); points earned where no price was set count nothing."
    )
    unpriced_points: int = Field(description="Points granted at a partner with no price set.")
    cost: int = Field(description="What the rule gave away in money: points_value + cashback.")


class RulesReport(ResponseModel):
    """What each rule granted over [since, until), as recorded when each purchase was posted
    (later rule changes do not rewrite it). Gross of returns: a return takes back in
    proportion to everything its purchase earned, not rule by rule."""

    since: datetime
    until: datetime
    currency: str
    rules: list[RuleCost]


class AssetTotals(ResponseModel):
    points: int
    cashback: int = Field(description="Minor units.")


class LiabilitySource(ResponseModel):
    partner_id: uuid.UUID | None = Field(description="Null: the operator's own awards and bonuses.")
    partner_code: str | None
    points: int = Field(description="Its share of the outstanding points.")
    cashback: int = Field(description="Its share of the outstanding cashback, minor units.")
    issue_per_1000: int | None = Field(description="Its issue price in force at `as_of`.")
    points_value: int = Field(description="The points' share valued at that price, minor units.")


class ExpiryBuckets(ResponseModel):
    due: int = Field(description="Expired already, not yet posted by the expiry run.")
    within_30_days: int
    within_90_days: int
    within_365_days: int
    later_or_never: int


class LiabilityReport(ResponseModel):
    """What the program owes cardholders at `as_of`: on cards, on hold and pending."""

    as_of: datetime
    currency: str
    outstanding: AssetTotals
    points_value: int = Field(description="Sum of the sources' points_value, minor units.")
    by_source: list[LiabilitySource]
    expiry_buckets: ExpiryBuckets | None = Field(
        description="Outstanding points by when they expire; only for now (no `as_of`)."
    )


class ExpiredMonth(ResponseModel):
    month: date
    expiries: int = Field(description="Expiry transactions (one per card per run).")
    points: int


class Cohort(ResponseModel):
    cohort: date = Field(description="The month the points were earned in.")
    issued: int = Field(description="Points issued, net of returns and reversals.")
    expired: int
    rate_bps: int | None = Field(description="expired / issued, in basis points.")


class BreakageReport(ResponseModel):
    since: datetime
    until: datetime
    expired_by_month: list[ExpiredMonth]
    cohorts: list[Cohort]


class RollForwardRow(ResponseModel):
    period_start: datetime
    period_end: datetime
    asset: Literal["points", "cashback"]
    opening: int
    issued: int
    redeemed: int
    expired: int
    adjustments: int = Field(description="Returns, refunds and reversals, net.")
    closing: int
    reconciles: bool = Field(
        description="opening + issued - redeemed - expired + adjustments == closing, with "
        "closing read from the entries."
    )


class RollForwardReport(ResponseModel):
    period: Literal["daily", "weekly", "monthly"]
    since: datetime
    until: datetime
    currency: str
    rows: list[RollForwardRow]

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field

from app.core.schemas import RequestModel, ResponseModel


class EarnRate(RequestModel):
    """`points` points for every `per_amount` minor units spent, rounded down.
    Example: 1 point per 100.00 EUR is `{"points": 1, "per_amount": 10000}`."""

    points: Annotated[int, Field(strict=True, ge=0, le=1_000_000)]
    per_amount: Annotated[int, Field(strict=True, gt=0, le=10**12)]


Codes = Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=1_000)]


class PartnerCreate(RequestModel):
    code: Annotated[
        str,
        Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", examples=["fitclub"]),
    ]
    name: Annotated[str, Field(min_length=1, max_length=200, examples=["Fit Club"])]
    earn_rate: EarnRate
    cashback_bps: Annotated[
        int,
        Field(
            strict=True,
            ge=0,
            le=10_000,
            description="Cashback in basis points of the purchase amount (250 = 2.5%).",
        ),
    ] = 0
    excluded_categories: Codes = Field(
        default_factory=list,
        description="Basket lines in these categories earn nothing (gift cards, tobacco).",
    )
    excluded_skus: Codes = Field(
        default_factory=list, description="Basket lines with these SKUs earn nothing."
    )
    can_earn: Annotated[bool, Field(strict=True)] = True
    can_redeem: Annotated[bool, Field(strict=True)] = True
    return_window_days: Annotated[int, Field(strict=True, ge=0, le=365)] = Field(
        default=0,
        description="Points earned here stay pending (not spendable) this many days after the "
        "purchase, while goods can still come back. 0: spendable at once.",
    )


class EarnRuleCreate(RequestModel):
    """A new version of a partner's earn rule. It applies to purchases from now on; what past
    purchases earned never changes."""

    earn_rate: EarnRate
    cashback_bps: Annotated[int, Field(strict=True, ge=0, le=10_000)] = 0
    excluded_categories: Codes = Field(default_factory=list)
    excluded_skus: Codes = Field(default_factory=list)
    return_window_days: Annotated[int, Field(strict=True, ge=0, le=365)] = Field(
        default=0,
        description="Points earned here stay pending (not spendable) this many days after the "
        "purchase, while goods can still come back. 0: spendable at once.",
    )


class EarnRuleRead(ResponseModel):
    version: int
    earn_rate: "EarnRateRead"
    cashback_bps: int
    excluded_categories: list[str]
    excluded_skus: list[str]
    return_window_days: int
    created_at: datetime


class EarnRateRead(ResponseModel):
    points: int
    per_amount: int


class PartnerRead(ResponseModel):
    id: uuid.UUID
    code: str
    name: str
    earn_rate: EarnRateRead
    cashback_bps: int
    earn_rule_version: int
    excluded_categories: list[str]
    excluded_skus: list[str]
    can_earn: bool
    can_redeem: bool
    return_window_days: int
    created_at: datetime

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, Field

from app.core.schemas import RequestModel, ResponseModel

MAX_PRICE = 10**9
Price = Annotated[int, Field(strict=True, ge=0, le=MAX_PRICE)]


class PriceCreate(RequestModel):
    """A partner's terms from `effective_from` on. Prices are per 1,000 points, in minor units
    of the program currency (1000: one cent a point), so that a fraction of a cent per point is
    still a whole number."""

    effective_from: AwareDatetime | None = Field(
        default=None,
        description="When the terms apply from: now (the default) or later, never earlier.",
    )
    issue_per_1000: Price = Field(
        description="What the partner pays for 1,000 points its customers earn with it."
    )
    reimbursement_per_1000: Price = Field(
        description="What the partner is paid for 1,000 points its customers redeem with it."
    )
    funds_cashback: Annotated[bool, Field(strict=True)] = Field(
        default=True,
        description="The partner pays for the cashback it grants (else the operator does).",
    )
    fee_per_period: Price = Field(
        default=0, description="A fixed fee per settlement period, minor units."
    )
    fee_bps: Annotated[int, Field(strict=True, ge=0, le=10_000)] = Field(
        default=0,
        description="A fee in basis points of the value of the points the partner issued in "
        "the period (250: 2.5 %).",
    )


class PriceRead(ResponseModel):
    partner_id: uuid.UUID
    effective_from: datetime
    issue_per_1000: int
    reimbursement_per_1000: int
    funds_cashback: bool
    fee_per_period: int
    fee_bps: int
    created_at: datetime

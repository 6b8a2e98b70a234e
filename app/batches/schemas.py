from typing import Annotated, Any, Literal

from pydantic import Field

from app.core.schemas import RequestModel, ResponseModel
from app.ledger.schemas import AwardAccrualCreate, PurchaseAccrualCreate, RedemptionCreate

MAX_BATCH_ITEMS = 1000


class BatchPurchase(PurchaseAccrualCreate):
    """A purchase, as in POST /v1/accruals with `kind: purchase`."""

    type: Literal["purchase"]
    kind: Literal["purchase"] = "purchase"


class BatchAward(AwardAccrualCreate):
    """An operator award, as in POST /v1/accruals with `kind: award`."""

    type: Literal["award"]
    kind: Literal["award"] = "award"


class BatchRedemption(RedemptionCreate):
    """A redemption, as in POST /v1/redemptions."""

    type: Literal["redemption"]


BatchItem = Annotated[BatchPurchase | BatchAward | BatchRedemption, Field(discriminator="type")]


class BatchCreate(RequestModel):
    items: Annotated[list[BatchItem], Field(min_length=1, max_length=MAX_BATCH_ITEMS)]
    atomic: Annotated[bool, Field(strict=True)] = Field(
        default=False,
        description="All or nothing: if any item is refused, none is posted (answer 422 "
        "`batch_refused`). By default each item stands alone.",
    )


class BatchItemResult(ResponseModel):
    index: int
    reference: str | None
    status: int = Field(
        description="201 posted; 200 nothing to post (a purchase too small to earn); 4xx "
        "refused, see `problem`; 424 not posted because another item of an atomic batch was "
        "refused."
    )
    result: dict[str, Any] | None = Field(
        description="What POST /v1/accruals or /v1/redemptions would have answered."
    )
    problem: dict[str, Any] | None


class BatchRead(ResponseModel):
    atomic: bool
    posted: int
    refused: int
    items: list[BatchItemResult]

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field

from app.core.schemas import CardNumber, PositiveAmount, Reference, RequestModel, ResponseModel
from app.ledger.schemas import CardBalances
from app.models.enums import Asset, HoldStatus

MAX_TTL_SECONDS = 30 * 24 * 3600


class HoldCreate(RequestModel):
    """Reserve value on a card for an order, until it is captured, voided, or its time runs out."""

    card_number: CardNumber
    asset: Asset
    amount: PositiveAmount = Field(description="Points, or minor units of cashback, to reserve.")
    reference: Reference = Field(description="The order number; one hold per order and partner.")
    ttl_seconds: Annotated[int, Field(strict=True, ge=1, le=MAX_TTL_SECONDS)] = Field(
        default=900, description="How long the hold lasts unless captured or voided (max 30 days)."
    )
    partner_id: uuid.UUID | None = Field(
        default=None,
        description="Operator keys: the partner the order is with (omit for the operator's own "
        "rewards). Partner keys hold for their own partner.",
    )


class HoldCapture(RequestModel):
    amount: PositiveAmount | None = Field(
        default=None,
        description="What to spend, at most the hold's amount; the rest is released. Omit to "
        "capture all of it.",
    )
    reason: Annotated[str, Field(min_length=1, max_length=500)] | None = None


class HoldVoid(RequestModel):
    reason: Annotated[str, Field(min_length=1, max_length=500)] | None = None


class HoldRead(ResponseModel):
    id: uuid.UUID = Field(description="The hold, and its `hold` transaction.")
    card_number: str
    partner_id: uuid.UUID | None
    asset: Asset
    amount: int
    reference: str
    status: HoldStatus = Field(
        description="`expired` as soon as the time to live runs out, even before the sweep "
        "has posted the release."
    )
    captured_amount: int | None
    expires_at: datetime
    created_at: datetime
    settled_at: datetime | None
    settled_by: uuid.UUID | None = Field(
        description="The capture, or the release, transaction that ended the hold."
    )


class HoldAnswer(HoldRead):
    released: int = Field(description="What this request gave back to the card.")
    balance: CardBalances = Field(
        description="What the card has available afterwards (outside its open holds)."
    )

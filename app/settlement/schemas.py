import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from app.core.schemas import MAX_AMOUNT, Reference, RequestModel, ResponseModel

Direction = Literal["partner_pays", "operator_pays", "nothing"]


def direction(net_amount: int) -> Direction:
    if net_amount > 0:
        return "partner_pays"
    return "operator_pays" if net_amount < 0 else "nothing"


class CloseRequest(RequestModel):
    through: AwareDatetime | None = Field(
        default=None,
        description="Close the periods that ended by then (now by default, and never later).",
    )


class PeriodRead(ResponseModel):
    period_start: datetime
    period_end: datetime
    statements: int


class CloseRead(ResponseModel):
    closed: list[PeriodRead] = Field(
        description="The periods this request closed (empty: they were closed already)."
    )


class StatementLineRead(ResponseModel):
    line_no: int
    kind: str = Field(
        description="`points_issued`, `points_accepted`, `cashback_issued` (the partner funds "
        "it), `cashback_issued_by_operator` (the operator does: worth 0 here), "
        "`cashback_accepted`, each also `..._corrected` (returns, refunds, reversals); "
        "`fee_percentage`, `fee_fixed`."
    )
    late: bool = Field(description="Postings of an earlier, closed period that arrived late.")
    points_price: int | None = Field(description="Per 1,000 points, minor units.")
    postings: int
    quantity: int = Field(description="Points, or minor units of cashback.")
    amount: int = Field(
        description="Minor units: positive, the partner owes it; negative, the operator does."
    )


class StatementRead(ResponseModel):
    id: uuid.UUID
    partner_id: uuid.UUID
    partner_code: str
    period_start: datetime
    period_end: datetime
    net_amount: int = Field(description="The sum of the lines' amounts.")
    direction: Direction
    transaction_id: uuid.UUID | None = Field(
        description="The `statement` posting of the net amount on the settlement accounts."
    )
    created_at: datetime
    currency: str
    lines: list[StatementLineRead] | None = Field(
        default=None, description="On a single statement's read."
    )


class PaymentCreate(RequestModel):
    direction: Literal["received", "sent"] = Field(
        description="`received` from the partner, or `sent` to it."
    )
    amount: Annotated[int, Field(strict=True, gt=0, le=MAX_AMOUNT)] = Field(
        description="Minor units of the program currency."
    )
    reference: Reference = Field(description="The bank transfer's reference.")
    statement_id: uuid.UUID | None = Field(
        default=None, description="The statement it pays, if one."
    )


class PaymentRead(ResponseModel):
    id: uuid.UUID
    partner_id: uuid.UUID
    statement_id: uuid.UUID | None
    direction: Literal["received", "sent"]
    amount: int
    reference: str
    created_at: datetime
    outstanding: "PositionRead"


class PositionRead(ResponseModel):
    partner_id: uuid.UUID
    statements: int = Field(description="What all its statements' net amounts add up to.")
    payments: int = Field(description="Received from it, less sent to it.")
    balance: int = Field(
        description="Its settlement account: what it owes the operator when negative, what "
        "the operator owes it when positive."
    )
    direction: Direction
    currency: str

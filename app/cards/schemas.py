from datetime import datetime
from typing import Annotated

from pydantic import Field

from app.core.schemas import CardNumber, RequestModel, ResponseModel
from app.models.enums import CardKind, CardStatus


class CardCreate(RequestModel):
    kind: CardKind = CardKind.BEARER
    customer_reference: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=100,
            description="The operator's id of the customer; personalized cards only.",
        ),
    ] = None
    card_number: CardNumber | None = Field(
        default=None,
        description="Operator keys may supply the number (pre-printed cards); "
        "otherwise one is generated.",
    )


class CardRead(ResponseModel):
    card_number: str
    kind: CardKind
    status: CardStatus
    customer_reference: str | None
    points: int = Field(description="Points the card holds.")
    cashback: int = Field(description="Cashback the card holds, in minor units of `currency`.")
    currency: str
    created_at: datetime

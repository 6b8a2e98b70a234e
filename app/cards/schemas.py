import uuid
from datetime import date, datetime
from typing import Annotated

from pydantic import Field

from app.core.schemas import CardNumber, RequestModel, ResponseModel
from app.models.enums import CardKind, CardStatus
from app.rules.schemas import CardTierRead


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
    birth_date: date | None = Field(
        default=None, description="Personalized cards: the customer's, for birthday campaigns."
    )
    referred_by: CardNumber | None = Field(
        default=None,
        description="The card of the customer who referred this one: a running referral "
        "campaign rewards both at this card's first purchase.",
    )


class CardRead(ResponseModel):
    card_number: str
    kind: CardKind
    status: CardStatus
    customer_reference: str | None
    birth_date: date | None = None
    referred_by: str | None = Field(default=None, description="The referring card's number.")
    points: int = Field(description="Points the card holds.")
    cashback: int = Field(description="Cashback the card holds, in minor units of `currency`.")
    currency: str
    created_at: datetime
    closed_at: datetime | None = None
    replaced_by: str | None = Field(
        default=None, description="Closed cards that were replaced or merged: the card now."
    )
    tier: CardTierRead | None = Field(
        default=None, description="Where the card stands on the tier ladder, once there is one."
    )


class CardReplace(RequestModel):
    """A lost or damaged card is replaced: a new card of the same kind and customer takes
    its balances, and the old card is closed and points to it."""

    card_number: CardNumber | None = Field(
        default=None, description="The new card's number (pre-printed); generated if omitted."
    )


class CardMerge(RequestModel):
    into_card_number: CardNumber = Field(
        description="The card that keeps the value; this card is closed and points to it."
    )


class Moved(ResponseModel):
    points: int
    cashback: int = Field(description="Minor units of the program currency.")


class CardReplaced(ResponseModel):
    old_card: "CardRead"
    new_card: "CardRead"
    transaction_id: uuid.UUID | None = Field(description="Null when there was nothing to move.")
    moved: Moved


class CardMerged(ResponseModel):
    card: "CardRead"
    merged_card: "CardRead"
    transaction_id: uuid.UUID | None
    moved: Moved

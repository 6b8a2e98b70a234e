import uuid
from datetime import date, datetime
from typing import Annotated, Literal, Self

from pydantic import AwareDatetime, Field, model_validator

from app.core.schemas import (
    MAX_AMOUNT,
    CardNumber,
    CurrencyCode,
    PositiveAmount,
    Reference,
    RequestModel,
    ResponseModel,
)
from app.models.enums import AccountKind, Asset, TransactionType

OccurredAt = Annotated[
    AwareDatetime | None,
    Field(
        description="When it happened at the till, with a UTC offset. Defaults to now; may be "
        "in the past for a till that was offline.",
    ),
]


class BasketLine(RequestModel):
    sku: Annotated[str, Field(min_length=1, max_length=64, examples=["GIFTCARD-50"])]
    category: Annotated[str, Field(min_length=1, max_length=64, examples=["gift_cards"])] | None = (
        None
    )
    amount: Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)] = Field(
        description="The line's total, in minor units."
    )


class _Basket(RequestModel):
    """What a purchase is made of, for the earn rules."""

    amount: PositiveAmount = Field(description="Purchase amount in minor units.")
    lines: Annotated[list[BasketLine], Field(min_length=1, max_length=500)] | None = Field(
        default=None,
        description="The basket, when the till has it: lines in the partner's excluded "
        "categories or SKUs earn nothing. Their amounts must add up to `amount`.",
    )
    redeemed_amount: Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)] = Field(
        default=0,
        description="The part of `amount` paid with points or cashback: it earns nothing.",
    )

    @model_validator(mode="after")
    def _parts_fit(self) -> Self:
        if self.redeemed_amount > self.amount:
            raise ValueError("redeemed_amount cannot exceed amount")
        if self.lines is not None and sum(line.amount for line in self.lines) != self.amount:
            raise ValueError("the lines' amounts must add up to amount")
        return self


class PurchaseAccrualCreate(_Basket):
    """A purchase at a partner: earns by that partner's earn rule and the card's tier."""

    kind: Literal["purchase"]
    card_number: CardNumber
    currency: CurrencyCode
    reference: Reference
    occurred_at: OccurredAt = None
    partner_id: uuid.UUID | None = Field(
        default=None,
        description="Operator keys: the partner where the purchase happened. Partner keys post "
        "as their own partner and may omit it.",
    )


class AwardAccrualCreate(RequestModel):
    """Points credited by the operator outside a purchase: a referral bonus, a goodwill credit."""

    kind: Literal["award"]
    card_number: CardNumber
    points: Annotated[int, Field(strict=True, gt=0, le=MAX_AMOUNT)]
    reason: Annotated[str, Field(min_length=1, max_length=500, examples=["referral bonus"])]
    reference: Reference | None = None
    occurred_at: OccurredAt = None


AccrualCreate = Annotated[PurchaseAccrualCreate | AwardAccrualCreate, Field(discriminator="kind")]


class AssetAmounts(ResponseModel):
    points: int
    cashback: int = Field(description="Minor units of the program currency.")


class AppliedRule(ResponseModel):
    """What one rule added to a purchase."""

    rule: Literal["base", "tier", "campaign"] = Field(
        description="`base`: the partner's earn rule; `tier`: the card's tier bonus; "
        "`campaign`: a campaign's bonus."
    )
    rule_ref: str = Field(description="The partner's id, the tier's code, or the campaign's.")
    rule_version: int = Field(
        description="The earn rule's, the tier ladder's, or the campaign's version."
    )
    points: int
    cashback: int


class TierState(ResponseModel):
    code: str = Field(description="The card's tier after this purchase.")
    upgraded_from: str | None = Field(
        description="Set when this purchase moved the card up (from this tier; null: none)."
    )


class AccrualRead(ResponseModel):
    transaction_id: uuid.UUID | None = Field(
        description="Null when the purchase earned nothing (then nothing is posted, status 200)."
    )
    kind: Literal["purchase", "award"]
    card_number: str
    partner_id: uuid.UUID | None
    reference: str | None
    occurred_at: datetime
    posted_at: datetime | None
    earned: AssetAmounts
    eligible_amount: int | None = Field(
        description="Purchases: what of the amount earned, after excluded lines and the part "
        "paid with points or cashback. It counts as qualifying spend for tiers."
    )
    applied: list[AppliedRule] = Field(
        description="Purchases: each rule that applied and what it added; they sum to `earned`."
    )
    tier: TierState | None = Field(description="Purchases, once the program has tiers.")
    pending: int = Field(
        description="Points of `earned` that wait out the partner's return window: not "
        "spendable, and not in `balance`, until `spendable_at`."
    )
    spendable_at: datetime | None = Field(
        description="When the pending points become spendable (null: nothing pending)."
    )
    balance: AssetAmounts
    currency: str


class AccrualPreviewCreate(_Basket):
    """A purchase as the till would post it, before payment: nothing is posted."""

    card_number: CardNumber
    currency: CurrencyCode
    occurred_at: OccurredAt = None
    partner_id: uuid.UUID | None = None

    def as_purchase(self) -> PurchaseAccrualCreate:
        """The purchase to run the rules on (validated the same way: lines, redeemed part)."""
        return PurchaseAccrualCreate(
            kind="purchase",
            reference=f"preview-{uuid.uuid4().hex}",  # never posted: no receipt to clash with
            **self.model_dump(),
        )


class AccrualPreviewRead(ResponseModel):
    """What the purchase would earn if posted now: the same rules as POST /v1/accruals."""

    card_number: str
    partner_id: uuid.UUID | None
    eligible_amount: int
    earned: AssetAmounts
    applied: list[AppliedRule]
    tier: TierState | None
    currency: str


class RedemptionCreate(RequestModel):
    card_number: CardNumber
    asset: Asset
    amount: PositiveAmount = Field(description="Points, or minor units of cashback, to spend.")
    reference: Reference
    occurred_at: OccurredAt = None
    partner_id: uuid.UUID | None = Field(
        default=None,
        description="Operator keys: the partner where it is spent (omit for the operator's own "
        "rewards). Partner keys spend at their own partner.",
    )


class RedemptionRead(ResponseModel):
    transaction_id: uuid.UUID
    card_number: str
    partner_id: uuid.UUID | None
    reference: str
    asset: Asset
    amount: int
    occurred_at: datetime
    posted_at: datetime
    balance: AssetAmounts
    currency: str


class Expiring(ResponseModel):
    points: int = Field(description="Points that expire next (the card's oldest).")
    on: date = Field(description="The day they expire, at its start, in the program's time zone.")


class BalanceRead(ResponseModel):
    """What a card can spend now, what its open holds reserve, and any clawback debt."""

    card_number: str
    status: str
    points: int = Field(
        description="Available to spend: outside open holds. Negative while the card owes a "
        "clawback (see `debt`)."
    )
    cashback: int = Field(description="Available, in minor units of `currency`; as `points`.")
    held: AssetAmounts = Field(
        description="Reserved by open holds that have not run out (a lapsed hold counts as "
        "available at once, before it is released)."
    )
    pending: AssetAmounts = Field(
        description="Earned at a partner but not spendable until its return window passes "
        "(points only; cashback does not wait)."
    )
    total: AssetAmounts = Field(description="Available plus held plus pending.")
    debt: AssetAmounts = Field(
        description="Clawback debt: what returned purchases took back after it was spent. "
        "Nothing can be spent until later earnings pay it off."
    )
    expiring: Expiring | None = Field(
        description="The next points to expire, if any will: spending uses them first. Points "
        "already expired are not in `points`, even before the expiry run posts them."
    )
    currency: str


class CardTransactionRead(ResponseModel):
    """One transaction as the card sees it: what it did to the card's balances."""

    id: uuid.UUID
    type: TransactionType
    partner_id: uuid.UUID | None
    reference: str | None
    description: str | None
    purchase_amount: int | None
    occurred_at: datetime
    posted_at: datetime
    points: int = Field(description="Change of the card's points (signed).")
    cashback: int = Field(description="Change of the card's cashback (signed, minor units).")


class CardTransactionPage(ResponseModel):
    items: list[CardTransactionRead]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page.")


class EntryRead(ResponseModel):
    account_id: int
    account_kind: AccountKind
    asset: Asset
    amount: int = Field(description="Signed, from the account holder's point of view.")
    card_number: str | None
    partner_id: uuid.UUID | None


class TransactionRead(ResponseModel):
    id: uuid.UUID
    type: TransactionType
    card_number: str | None
    partner_id: uuid.UUID | None
    api_key_id: uuid.UUID | None = Field(
        description="The key that posted it; null for what the service posts itself (the "
        "release of an expired hold)."
    )
    reference: str | None
    description: str | None
    purchase_amount: int | None
    currency: str | None
    corrects_id: uuid.UUID | None
    occurred_at: datetime
    posted_at: datetime
    entries: list[EntryRead]


class TransferCreate(RequestModel):
    """Operator only: move points or cashback from one card to another."""

    from_card_number: CardNumber
    to_card_number: CardNumber
    asset: Asset
    amount: PositiveAmount
    reason: Annotated[str, Field(min_length=1, max_length=500, examples=["goodwill gift"])]
    reference: Reference | None = None


class CardBalances(ResponseModel):
    points: int
    cashback: int


class TransferRead(ResponseModel):
    transaction_id: uuid.UUID
    from_card_number: str
    to_card_number: str
    asset: Asset
    amount: int
    reason: str
    reference: str | None
    from_balance: CardBalances
    to_balance: CardBalances


class ReversalCreate(RequestModel):
    reason: Annotated[str, Field(min_length=1, max_length=500, examples=["wrong card"])] | None = (
        None
    )


class ReversalRead(ResponseModel):
    transaction_id: uuid.UUID
    corrects_id: uuid.UUID = Field(description="The transaction this one undoes.")
    card_number: str
    reversed: CardBalances = Field(description="What the reversal did to the card (signed).")
    balance: CardBalances
    posted_at: datetime


class RefundCreate(RequestModel):
    amount: PositiveAmount = Field(description="Points, or minor units of cashback, to give back.")
    reference: Reference | None = Field(
        default=None, description="The refund's own receipt number, if the till has one."
    )
    reason: Annotated[str, Field(min_length=1, max_length=500)] | None = None


class RefundRead(ResponseModel):
    transaction_id: uuid.UUID
    corrects_id: uuid.UUID = Field(description="The redemption refunded.")
    card_number: str
    asset: Asset
    amount: int
    refunded_total: int = Field(description="All refunds of this redemption so far.")
    refundable: int = Field(description="What can still be refunded.")
    balance: CardBalances
    posted_at: datetime


class PurchaseReturnCreate(RequestModel):
    """Goods worth `amount` of the purchase came back."""

    amount: PositiveAmount = Field(
        description="The value of the goods returned, in minor units of the purchase's currency."
    )
    reference: Reference | None = Field(
        default=None, description="The return's own receipt number, if the till has one."
    )
    reason: Annotated[str, Field(min_length=1, max_length=500)] | None = None


class PurchaseReturnRead(ResponseModel):
    return_id: uuid.UUID
    transaction_id: uuid.UUID | None = Field(
        description="The refund transaction that took value back; null when the return was too "
        "small to take back anything yet (it still counts towards later returns)."
    )
    corrects_id: uuid.UUID = Field(description="The accrual whose purchase was returned.")
    card_number: str
    amount: int
    returned_total: int = Field(description="All goods returned against this purchase so far.")
    returnable: int = Field(description="What of the purchase can still be returned.")
    taken_back: AssetAmounts = Field(description="What this return took back from the card.")
    balance: AssetAmounts = Field(
        description="The card's balances afterwards, outside holds; negative means a debt."
    )
    debt: AssetAmounts = Field(
        description="Clawback debt: what was taken back after the card had spent it. The card "
        "spends nothing until later earnings pay it off."
    )
    posted_at: datetime

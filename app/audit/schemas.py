import uuid
from datetime import datetime

from pydantic import Field

from app.core.schemas import ResponseModel


class UnbalancedTransaction(ResponseModel):
    transaction_id: uuid.UUID
    asset: str
    total: int
    entries: int


class ThinTransaction(ResponseModel):
    transaction_id: uuid.UUID
    entries: int


class CardBalanceMismatch(ResponseModel):
    card_number: str
    asset: str
    stored: int
    from_entries: int


class HoldMismatch(ResponseModel):
    card_number: str | None = Field(description="Null: the program's operator_held account.")
    asset: str
    stored: int = Field(description="The card account's `held`, or the held account's entries.")
    from_holds: int = Field(description="What the open holds reserve.")


class PendingMismatch(ResponseModel):
    card_number: str | None = Field(description="Null: the program's operator_pending account.")
    stored: int = Field(
        description="The card points account's `pending`, or the pending account's entries."
    )
    from_purchases: int = Field(description="What the purchases still have waiting.")


class AuditReport(ResponseModel):
    """The ledger's promises, checked against one consistent snapshot. Lists stop at 100."""

    ok: bool = Field(description="True when every check below found nothing.")
    as_of: datetime
    transactions: int
    entries: int
    asset_totals: dict[str, int] = Field(
        description="Sum of all entries per asset: zero in a double-entry ledger."
    )
    unbalanced_transactions: list[UnbalancedTransaction]
    transactions_with_fewer_than_two_entries: list[ThinTransaction]
    card_balance_mismatches: list[CardBalanceMismatch] = Field(
        description="Card accounts whose stored balance is not the sum of their entries."
    )
    hold_mismatches: list[HoldMismatch] = Field(
        description="What is on hold, by the holds, disagrees with the accounts."
    )
    pending_mismatches: list[PendingMismatch] = Field(
        description="Points pending (a return window), by the purchases, disagree with the "
        "accounts."
    )

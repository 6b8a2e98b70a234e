"""Enumerations stored as text with CHECK constraints (cheaper to extend than PG enum types)."""

from enum import StrEnum


class Asset(StrEnum):
    """What a ledger amount counts."""

    POINTS = "points"
    """Whole loyalty points."""
    CASHBACK = "cashback"
    """Minor units (cents) of the program's currency."""


MONEY = "money"
"""The settlement's asset: minor units of the program currency owed between the operator and
the partners. Not an `Asset`: no card ever holds it."""


class AccountKind(StrEnum):
    """Whose account it is. Amounts are from the account holder's point of view:
    a positive entry increases what the holder has."""

    CARD = "card"
    """What a card holds. The only kind with a running, locked balance."""
    PARTNER_ISSUED = "partner_issued"
    """Value a partner granted to cards (goes negative: the partner owes it)."""
    PARTNER_REDEEMED = "partner_redeemed"
    """Value cards spent at a partner (goes positive: the partner is owed it)."""
    OPERATOR_ISSUED = "operator_issued"
    """Value the operator granted directly (awards, goodwill)."""
    OPERATOR_REDEEMED = "operator_redeemed"
    """Value spent with the operator itself, not at a partner."""
    OPERATOR_HELD = "operator_held"
    """Value on hold for an order: reserved on a card until captured, voided or expired. The
    holds table says whose it is; the card account's `held` column counts it too."""
    OPERATOR_PENDING = "operator_pending"
    """Points earned at a partner, waiting out its return window before the card can spend
    them. pending_points says whose they are; the card account's `pending` column counts them."""
    PARTNER_SETTLEMENT = "partner_settlement"
    """Money (asset `money`) between a partner and the operator: statements and payments. A
    partner that owes the operator has a negative balance."""
    OPERATOR_SETTLEMENT = "operator_settlement"
    """The operator's side of every settlement posting."""
    OPERATOR_BREAKAGE = "operator_breakage"
    """Points that expired unspent (breakage): the operator's, no longer the card's."""


class TransactionType(StrEnum):
    ACCRUAL = "accrual"
    """A purchase at a partner earned points and/or cashback by the partner's rates."""
    AWARD = "award"
    """The operator credited points outside a purchase (referral, goodwill)."""
    REDEMPTION = "redemption"
    """A card spent points or cashback."""
    TRANSFER = "transfer"
    """The operator moved value from one card to another (a replacement, a merge, a gift)."""
    REVERSAL = "reversal"
    """Undoes another transaction in full (`corrects_id`), once: a till's mistaken posting."""
    REFUND = "refund"
    """Corrects part or all of a purchase (`corrects_id`): a refunded redemption gives the card
    back what it spent; returned goods take back, in proportion, what an accrual earned."""
    HOLD = "hold"
    """Reserves value on a card for an order (the card's account to the held account)."""
    CAPTURE = "capture"
    """Spends what a hold (`corrects_id`) reserved, in part or in full, at the partner."""
    RELEASE = "release"
    """Gives back what a hold (`corrects_id`) reserved and did not capture: a void, the rest
    of a partial capture, or the hold's expiry."""
    MATURITY = "maturity"
    """Pending points of a purchase (`corrects_id`) became spendable: the partner's return
    window passed."""
    STATEMENT = "statement"
    """A closed period's net amount between a partner and the operator (asset `money`)."""
    PAYMENT = "payment"
    """Money received from or sent to a partner (asset `money`)."""
    EXPIRY = "expiry"
    """Points whose lots ran out of time (or a card inactive too long) left the card for the
    breakage account (app/expiry/)."""


class HoldStatus(StrEnum):
    OPEN = "open"
    """Reserved. Past `expires_at` it no longer counts, even before the sweep releases it."""
    CAPTURED = "captured"
    VOIDED = "voided"
    EXPIRED = "expired"
    """Released into the ledger after its time to live ran out."""


class CardKind(StrEnum):
    BEARER = "bearer"
    """Anonymous: whoever holds the card uses it."""
    PERSONALIZED = "personalized"
    """Tied to a known customer by a customer reference."""


class CardStatus(StrEnum):
    ACTIVE = "active"
    BLOCKED = "blocked"
    """Can neither earn nor spend; balances are kept."""
    CLOSED = "closed"
    """For good: replaced, merged into another card, or closed empty. Its history stays."""


class ApiKeyRole(StrEnum):
    OPERATOR = "operator"
    """Everything, for every partner."""
    PARTNER = "partner"
    """Bound to one partner: posts as that partner and sees only its own transactions."""


def sql_in(enum: type[StrEnum]) -> str:
    """`'a', 'b'` for a CHECK constraint listing the enum's values."""
    return ", ".join(f"'{member.value}'" for member in enum)

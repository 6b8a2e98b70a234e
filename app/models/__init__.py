"""SQLAlchemy table definitions. Queries live in each feature's repository.py."""

from app.models.account import Account
from app.models.api_key import ApiKey
from app.models.base import Base
from app.models.campaign import Campaign, CardStamps
from app.models.card import Card, CardSpend
from app.models.hold import Hold
from app.models.idempotency import IdempotencyRecord
from app.models.partner import EarnRule, Partner
from app.models.partner_price import PartnerPrice
from app.models.pending_point import PendingPoints
from app.models.point_lot import ExpiredPoints, PointLot
from app.models.program import Program
from app.models.purchase_return import PurchaseReturn
from app.models.settlement import (
    Payment,
    SettledTransaction,
    SettlementPeriod,
    Statement,
    StatementLine,
)
from app.models.tier_ladder import TierLadder
from app.models.transaction import Earning, Entry, Transaction

__all__ = [
    "Account",
    "ApiKey",
    "Base",
    "Campaign",
    "Card",
    "CardSpend",
    "CardStamps",
    "EarnRule",
    "Earning",
    "Entry",
    "ExpiredPoints",
    "Hold",
    "IdempotencyRecord",
    "Partner",
    "PartnerPrice",
    "Payment",
    "PendingPoints",
    "PointLot",
    "Program",
    "PurchaseReturn",
    "SettledTransaction",
    "SettlementPeriod",
    "Statement",
    "StatementLine",
    "TierLadder",
    "Transaction",
]

from app.core.errors import AppError


class InsufficientBalance(AppError):
    status = 422
    code = "insufficient_balance"
    title = "The card holds less than the amount asked for"


class DuplicateReference(AppError):
    status = 409
    code = "duplicate_reference"
    title = "This partner already posted this reference for this type of transaction"


class CurrencyMismatch(AppError):
    status = 422
    code = "currency_mismatch"
    title = "The amount is not in the program's currency"


class PartnerRequired(AppError):
    status = 422
    code = "partner_required"
    title = "An operator key posting a purchase must say at which partner (partner_id)"


class PartnerCannotEarn(AppError):
    status = 409
    code = "partner_cannot_earn"
    title = "Cards do not earn at this partner"


class PartnerCannotRedeem(AppError):
    status = 409
    code = "partner_cannot_redeem"
    title = "Cards cannot redeem at this partner"


class OccurredAtOutOfRange(AppError):
    status = 422
    code = "occurred_at_out_of_range"
    title = "occurred_at is too far in the past or in the future"


class TransactionNotFound(AppError):
    status = 404
    code = "transaction_not_found"
    title = "No such transaction"


class InvalidCursor(AppError):
    status = 422
    code = "invalid_cursor"
    title = "The pagination cursor is not one this service issued"


class NotReversible(AppError):
    status = 422
    code = "not_reversible"
    title = "Only accruals, awards and redemptions can be reversed"


class AlreadyReversed(AppError):
    status = 409
    code = "already_reversed"
    title = "This transaction was already reversed"


class NotARedemption(AppError):
    status = 422
    code = "not_a_redemption"
    title = "Only a redemption can be refunded this way"


class RefundExceedsOriginal(AppError):
    status = 422
    code = "refund_exceeds_original"
    title = "Refunds cannot add up to more than the transaction they correct"


class AlreadyRefunded(AppError):
    status = 409
    code = "already_refunded"
    title = "Part of this transaction was refunded: refund the rest instead of reversing it"


class NotAPurchase(AppError):
    status = 422
    code = "not_a_purchase"
    title = "Only a purchase accrual can have goods returned against it"

from app.core.errors import AppError


class CardNotFound(AppError):
    status = 404
    code = "card_not_found"
    title = "No such card"


class ReferrerNotFound(AppError):
    status = 422
    code = "referrer_not_found"
    title = "The referring card does not exist or is closed"


class CardBlocked(AppError):
    status = 409
    code = "card_blocked"
    title = "The card is blocked: it can neither earn nor spend"


class CardNumberTaken(AppError):
    status = 409
    code = "card_number_taken"
    title = "A card with this number exists"


class CustomerReferenceMismatch(AppError):
    status = 422
    code = "customer_reference_mismatch"
    title = "Personalized cards need a customer reference; bearer cards carry no customer data"


class CardClosed(AppError):
    status = 409
    code = "card_closed"
    title = "The card is closed: it was replaced, merged or closed, and moves no value"


class CardHasBalance(AppError):
    status = 409
    code = "card_has_balance"
    title = "The card still holds value or has open holds: move or settle them before closing it"


class SameCard(AppError):
    status = 422
    code = "same_card"
    title = "Source and destination are the same card"


class NotSameCustomer(AppError):
    status = 422
    code = "not_same_customer"
    title = "Only two personalized cards of the same customer can be merged"

from app.core.errors import AppError


class CardNotFound(AppError):
    status = 404
    code = "card_not_found"
    title = "No such card"


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
    title = "Personalized cards need a customer reference; bearer cards must not have one"

from app.core.errors import AppError


class StatementNotFound(AppError):
    status = 404
    code = "statement_not_found"
    title = "No such statement"


class PaymentReferenceTaken(AppError):
    status = 409
    code = "payment_reference_taken"
    title = "A payment with this reference was recorded for the partner already"


class StatementOfAnotherPartner(AppError):
    status = 422
    code = "statement_of_another_partner"
    title = "The statement is another partner's"

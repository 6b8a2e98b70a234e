from app.core.errors import AppError


class PartnerNotFound(AppError):
    status = 404
    code = "partner_not_found"
    title = "No such partner"


class PartnerCodeTaken(AppError):
    status = 409
    code = "partner_code_taken"
    title = "A partner with this code exists"

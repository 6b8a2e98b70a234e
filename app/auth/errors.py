from app.core.errors import AppError


class ApiKeyNotFound(AppError):
    status = 404
    code = "api_key_not_found"
    title = "No such API key"


class PartnerRequiredForRole(AppError):
    status = 422
    code = "partner_required"
    title = "A partner key must name its partner; an operator key must not"

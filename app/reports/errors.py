from app.core.errors import AppError


class InvalidPeriod(AppError):
    status = 422
    code = "invalid_period"
    title = "The period must start before it ends"

from app.core.errors import AppError


class PriceInThePast(AppError):
    status = 422
    code = "price_in_the_past"
    title = "Prices apply from now or later, never to the past"


class PriceExists(AppError):
    status = 409
    code = "price_exists"
    title = "The partner already has terms from this moment"

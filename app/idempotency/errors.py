from app.core.errors import AppError


class IdempotencyKeyRequired(AppError):
    status = 400
    code = "idempotency_key_required"
    title = "This request moves value and needs an Idempotency-Key header"


class IdempotencyKeyReused(AppError):
    status = 422
    code = "idempotency_key_reused"
    title = "This Idempotency-Key was used with a different request"

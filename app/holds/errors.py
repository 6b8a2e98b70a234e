from app.core.errors import AppError


class HoldNotFound(AppError):
    status = 404
    code = "hold_not_found"
    title = "No such hold"


class HoldNotOpen(AppError):
    status = 409
    code = "hold_not_open"
    title = "The hold was already captured, voided or released"


class HoldExpired(AppError):
    status = 409
    code = "hold_expired"
    title = "The hold's time to live ran out: nothing is reserved any more"


class CaptureExceedsHold(AppError):
    status = 422
    code = "capture_exceeds_hold"
    title = "A capture cannot take more than the hold reserved"

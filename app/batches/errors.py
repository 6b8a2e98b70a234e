from app.core.errors import AppError


class BatchRefused(AppError):
    status = 422
    code = "batch_refused"
    title = "An item of an all-or-nothing batch was refused: nothing was posted"

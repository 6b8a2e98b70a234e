from app.core.errors import AppError


class NoTierLadder(AppError):
    status = 404
    code = "no_tier_ladder"
    title = "The program has no tier ladder yet"

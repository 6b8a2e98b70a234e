"""Integer money arithmetic: amounts are minor units, prices per 1,000 points."""


def divide_rounded(numerator: int, denominator: int) -> int:
    """numerator / denominator to the nearest integer, halves away from zero."""
    quotient, remainder = divmod(abs(numerator), denominator)
    if 2 * remainder >= denominator:
        quotient += 1
    return quotient if numerator >= 0 else -quotient


def points_value(points: int, price_per_1000: int | None) -> int:
    """Points in minor units at a price per 1,000 points (nothing when unpriced)."""
    return 0 if price_per_1000 is None else divide_rounded(points * price_per_1000, 1000)

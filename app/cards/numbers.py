"""Card numbers: the program's prefix, random digits, and a Luhn check digit, so a mistyped
digit at a till is caught before any request reaches the ledger."""

import secrets

from app.core.schemas import luhn_valid


def luhn_check_digit(partial: str) -> str:
    for digit in "0123456789":
        if luhn_valid(partial + digit):
            return digit
    raise AssertionError("unreachable: one digit always completes a Luhn sum")


def generate_card_number(prefix: str, length: int) -> str:
    body_length = length - len(prefix) - 1
    body = "".join(str(secrets.randbelow(10)) for _ in range(body_length))
    partial = prefix + body
    return partial + luhn_check_digit(partial)

"""Unit tests of card number generation and the Luhn check."""

import pytest

from app.cards.numbers import generate_card_number, luhn_check_digit
from app.core.schemas import luhn_valid


@pytest.mark.parametrize(
    "number",
    [
        "79927398713",
        "4111111111111111",
        "4012888888881881",
        "378282246310005",
        "6011111111111117",
        "5555555555554444",
        "0",
        "18",
        "00000000",
    ],
)
def test_known_valid_numbers(number: str) -> None:
    assert luhn_valid(number)


@pytest.mark.parametrize(
    "number",
    [
        "79927398710",
        "79927398711",
        "79927398712",
        "79927398714",
        "79927398719",
        "4111111111111112",
        "1",
        "19",
        "97927398713",  # two adjacent digits swapped
    ],
)
def test_known_invalid_numbers(number: str) -> None:
    assert not luhn_valid(number)


@pytest.mark.parametrize(
    ("partial", "digit"),
    [
        ("7992739871", "3"),
        ("411111111111111", "1"),
        ("37828224631000", "5"),
        ("", "0"),
        ("1", "8"),
    ],
)
def test_check_digit(partial: str, digit: str) -> None:
    assert luhn_check_digit(partial) == digit


def test_exactly_one_check_digit_completes_a_number() -> None:
    for partial in ["7", "700012345678901", "999999999", "1234567890123456789"[:18]]:
        completing = [d for d in "0123456789" if luhn_valid(partial + d)]
        assert completing == [luhn_check_digit(partial)]


@pytest.mark.parametrize(
    ("prefix", "length"),
    [("7", 16), ("7", 12), ("7", 19), ("123456", 12), ("6012", 19), ("0", 16)],
)
def test_generated_number_shape(prefix: str, length: int) -> None:
    for _ in range(50):
        number = generate_card_number(prefix, length)
        assert len(number) == length
        assert number.isdigit()
        assert number.startswith(prefix)
        assert luhn_valid(number)
        assert number[-1] == luhn_check_digit(number[:-1])


def test_generated_numbers_detect_any_single_digit_typo() -> None:
    number = generate_card_number("7", 16)
    for i, original in enumerate(number):
        for d in "0123456789":
            if d != original:
                typo = number[:i] + d + number[i + 1 :]
                assert not luhn_valid(typo), typo


def test_generated_numbers_are_random() -> None:
    numbers = {generate_card_number("7", 16) for _ in range(1_000)}
    # 10^14 possible bodies: a collision in 1000 draws would mean the generator is broken.
    assert len(numbers) == 1_000
    # Every body position takes many values.
    for position in range(1, 15):
        assert len({n[position] for n in numbers}) == 10

"""Schema base classes and the field types shared by every feature."""

from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

# Largest amount accepted in one request, in minor units or points: 10^12 is ten billion in a
# two-decimal currency. Far from bigint's 9.2 * 10^18, so sums of many postings stay exact.
MAX_AMOUNT = 10**12


class RequestModel(BaseModel):
    """Request bodies: unknown fields are refused, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=False)


_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)
"""Luhn: a doubled digit, with its two digits summed."""


def luhn_valid(digits: str) -> bool:
    """Digits only (the caller checks the pattern first)."""
    plain = sum(map(int, digits[-1::-2]))
    doubled = sum(_DOUBLED[int(d)] for d in digits[-2::-2])
    return (plain + doubled) % 10 == 0


def _check_card_number(value: str) -> str:
    if not luhn_valid(value):
        raise PydanticCustomError("invalid_card_number", "card number check digit is wrong (Luhn)")
    return value


CardNumber = Annotated[
    str,
    Field(
        pattern=r"^[0-9]{8,19}$",
        description="8 to 19 digits, the last one a Luhn check digit.",
        examples=["7000123456789016"],
    ),
    AfterValidator(_check_card_number),
]

CardNumberInPath = Annotated[
    str,
    Path(pattern=r"^[0-9]{8,19}$", description="The card number, digits only."),
    AfterValidator(_check_card_number),
]

PositiveAmount = Annotated[int, Field(strict=True, gt=0, le=MAX_AMOUNT)]
"""A strictly positive integer amount: no strings, no floats, no booleans."""

Reference = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[\x21-\x7E]([\x20-\x7E]*[\x21-\x7E])?$",
        description="The partner's receipt or order number: printable ASCII, "
        "no surrounding spaces.",
        examples=["R-2026-000123"],
    ),
]

CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["EUR"])]


def problem_responses(*errors: Any) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route: each status with the codes it can carry."""
    by_status: dict[int, list[str]] = {}
    for err in errors:
        by_status.setdefault(err.status, []).append(err.code)
    return {
        status: {
            "description": "Problem: " + ", ".join(sorted(set(codes))),
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        }
        for status, codes in sorted(by_status.items())
    }


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable machine-readable `code`."""

    type: str
    title: str
    status: int
    detail: str
    code: str

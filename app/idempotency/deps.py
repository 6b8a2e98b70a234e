from typing import Annotated

from fastapi import Depends, Header
from pydantic import StringConstraints

from app.idempotency.errors import IdempotencyKeyRequired

_MIN, _MAX, _PATTERN = 1, 255, r"^[\x21-\x7E]+$"

# The same rule for app/ledger/hot_http.py, which reads the header without FastAPI.
IDEMPOTENCY_KEY_CONSTRAINTS = Annotated[
    str, StringConstraints(min_length=_MIN, max_length=_MAX, pattern=_PATTERN)
]

_KEY_HEADER = Header(
    alias="Idempotency-Key",
    min_length=_MIN,
    max_length=_MAX,
    pattern=_PATTERN,
    description="Unique per request (a UUID is a good choice). A retry with the same key "
    "returns the first answer and posts nothing.",
)


async def require_idempotency_key(key: Annotated[str | None, _KEY_HEADER] = None) -> str:
    if key is None:
        raise IdempotencyKeyRequired()
    return key


async def optional_idempotency_key(key: Annotated[str | None, _KEY_HEADER] = None) -> str | None:
    return key


IdempotencyKey = Annotated[str, Depends(require_idempotency_key)]
"""A value-moving route's Idempotency-Key: required."""

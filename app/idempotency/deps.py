from typing import Annotated

from fastapi import Header

from app.idempotency.errors import IdempotencyKeyRequired

_KEY_HEADER = Header(
    alias="Idempotency-Key",
    min_length=1,
    max_length=255,
    pattern=r"^[\x21-\x7E]+$",
    description="Unique per request (a UUID is a good choice). A retry with the same key "
    "returns the first answer and posts nothing.",
)


async def require_idempotency_key(key: Annotated[str | None, _KEY_HEADER] = None) -> str:
    if key is None:
        raise IdempotencyKeyRequired()
    return key


async def optional_idempotency_key(key: Annotated[str | None, _KEY_HEADER] = None) -> str | None:
    return key

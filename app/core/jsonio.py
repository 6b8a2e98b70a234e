"""One JSON encoder for every answer, so a body renders the same whichever path built it."""

import uuid
from typing import Any

import orjson


def _default(value: Any) -> Any:
    # asyncpg returns its own UUID subclass, which orjson does not recognize by type.
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """UUIDs as strings, UTC timestamps ending in "Z": exactly as pydantic renders them."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_UTC_Z)

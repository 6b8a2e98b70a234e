import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field

from app.core.schemas import RequestModel, ResponseModel
from app.models.enums import ApiKeyRole


class ApiKeyCreate(RequestModel):
    name: Annotated[str, Field(min_length=1, max_length=200, examples=["Till 3, Main St shop"])]
    role: ApiKeyRole
    partner_id: uuid.UUID | None = Field(
        default=None, description="Required for partner keys: the partner the key posts as."
    )


class ApiKeyRead(ResponseModel):
    id: uuid.UUID
    name: str
    role: ApiKeyRole
    partner_id: uuid.UUID | None
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The secret. Shown once; only its hash is stored.")

import uuid

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.schemas import ApiKeyCreate
from app.auth.service import create_key


async def insert_api_key(
    app: FastAPI, *, role: str, partner_id: uuid.UUID | str | None = None, name: str = "test"
) -> str:
    """Create a key directly in the database (the bootstrap path) and return its secret."""
    engine: AsyncEngine = app.state.engine
    req = ApiKeyCreate.model_validate({"name": name, "role": role, "partner_id": partner_id})
    async with engine.begin() as conn:
        created = await create_key(conn, app.state.program.id, req)
    return created.key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}

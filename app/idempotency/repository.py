import uuid

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

# Claims the key. If another transaction holds an uncommitted claim on the same key, PostgreSQL
# makes this INSERT wait for it: a concurrent duplicate never runs in parallel with the first.
CLAIM = text("""
    INSERT INTO idempotency_keys (api_key_id, key, request_hash)
    VALUES (:api_key_id, :key, :request_hash)
    ON CONFLICT (api_key_id, key) DO NOTHING
    RETURNING 1
""")

FETCH = text("""
    SELECT request_hash, response_status, response_body FROM idempotency_keys
    WHERE api_key_id = :api_key_id AND key = :key
""")

STORE = text("""
    UPDATE idempotency_keys SET response_status = :status, response_body = :body
    WHERE api_key_id = :api_key_id AND key = :key
""")


async def claim(
    conn: AsyncConnection, api_key_id: uuid.UUID, key: str, request_hash: bytes
) -> bool:
    params = {"api_key_id": api_key_id, "key": key, "request_hash": request_hash}
    return (await conn.execute(CLAIM, params)).first() is not None


async def fetch(
    conn: AsyncConnection, api_key_id: uuid.UUID, key: str
) -> Row[tuple[object, ...]] | None:
    return (await conn.execute(FETCH, {"api_key_id": api_key_id, "key": key})).first()


async def store(
    conn: AsyncConnection, api_key_id: uuid.UUID, key: str, status: int, body: bytes
) -> None:
    params = {"api_key_id": api_key_id, "key": key, "status": status, "body": body}
    await conn.execute(STORE, params)

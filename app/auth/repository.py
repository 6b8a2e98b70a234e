import uuid

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

FIND_ACTIVE_KEY = text("""
    SELECT id, program_id, role, partner_id FROM api_keys
    WHERE key_hash = :key_hash AND revoked_at IS NULL
""")

INSERT_KEY = text("""
    INSERT INTO api_keys (id, program_id, name, role, partner_id, key_prefix, key_hash)
    VALUES (:id, :program_id, :name, :role, :partner_id, :key_prefix, :key_hash)
    RETURNING id, name, role, partner_id, key_prefix, created_at, revoked_at
""")

LIST_KEYS = text("""
    SELECT id, name, role, partner_id, key_prefix, created_at, revoked_at FROM api_keys
    WHERE program_id = :program_id ORDER BY created_at, id
""")

REVOKE_KEY = text("""
    UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
    WHERE id = :id AND program_id = :program_id
    RETURNING id, name, role, partner_id, key_prefix, created_at, revoked_at
""")

COUNT_KEYS = text("SELECT count(*) FROM api_keys WHERE program_id = :program_id")

# Serializes the first-start bootstrap across processes (several workers may start at once).
BOOTSTRAP_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('loyalty-ledger:bootstrap-key'))")


async def find_active(conn: AsyncConnection, key_hash: bytes) -> Row[tuple[object, ...]] | None:
    return (await conn.execute(FIND_ACTIVE_KEY, {"key_hash": key_hash})).first()


async def insert(
    conn: AsyncConnection,
    *,
    program_id: int,
    name: str,
    role: str,
    partner_id: uuid.UUID | None,
    key_prefix: str,
    key_hash: bytes,
) -> Row[tuple[object, ...]]:
    params = {
        "id": uuid.uuid4(),
        "program_id": program_id,
        "name": name,
        "role": role,
        "partner_id": partner_id,
        "key_prefix": key_prefix,
        "key_hash": key_hash,
    }
    return (await conn.execute(INSERT_KEY, params)).one()


async def list_all(conn: AsyncConnection, program_id: int) -> list[Row[tuple[object, ...]]]:
    return list(await conn.execute(LIST_KEYS, {"program_id": program_id}))


async def revoke(
    conn: AsyncConnection, program_id: int, key_id: uuid.UUID
) -> Row[tuple[object, ...]] | None:
    return (await conn.execute(REVOKE_KEY, {"id": key_id, "program_id": program_id})).first()


async def count(conn: AsyncConnection, program_id: int) -> int:
    return int((await conn.execute(COUNT_KEYS, {"program_id": program_id})).scalar_one())


async def lock_bootstrap(conn: AsyncConnection) -> None:
    await conn.execute(BOOTSTRAP_LOCK)

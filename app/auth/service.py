import uuid

from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth import keys, repository
from app.auth.errors import ApiKeyNotFound, PartnerRequiredForRole
from app.auth.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from app.models.enums import ApiKeyRole
from app.partners import repository as partners_repository
from app.partners.errors import PartnerNotFound


async def create_key(conn: AsyncConnection, program_id: int, req: ApiKeyCreate) -> ApiKeyCreated:
    if (req.role == ApiKeyRole.PARTNER) != (req.partner_id is not None):
        raise PartnerRequiredForRole()
    if req.partner_id is not None and not await partners_repository.exists(
        conn, program_id, req.partner_id
    ):
        raise PartnerNotFound()
    secret = keys.generate_key()
    row = await repository.insert(
        conn,
        program_id=program_id,
        name=req.name,
        role=req.role.value,
        partner_id=req.partner_id,
        key_prefix=keys.display_prefix(secret),
        key_hash=keys.hash_key(secret),
    )
    return ApiKeyCreated(key=secret, **row._mapping)


async def list_keys(conn: AsyncConnection, program_id: int) -> list[ApiKeyRead]:
    return [ApiKeyRead(**r._mapping) for r in await repository.list_all(conn, program_id)]


async def revoke_key(conn: AsyncConnection, program_id: int, key_id: uuid.UUID) -> ApiKeyRead:
    row = await repository.revoke(conn, program_id, key_id)
    if row is None:
        raise ApiKeyNotFound()
    return ApiKeyRead(**row._mapping)


async def bootstrap_operator_key(conn: AsyncConnection, program_id: int) -> str | None:
    """On first start (no key at all), create an operator key and return its secret, once."""
    await repository.lock_bootstrap(conn)
    if await repository.count(conn, program_id) > 0:
        return None
    created = await create_key(
        conn,
        program_id,
        ApiKeyCreate(name="bootstrap operator key", role=ApiKeyRole.OPERATOR),
    )
    return created.key

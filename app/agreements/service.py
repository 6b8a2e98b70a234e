import uuid

from sqlalchemy.ext.asyncio import AsyncConnection

from app.agreements import repository
from app.agreements.errors import PriceExists, PriceInThePast
from app.agreements.schemas import PriceCreate, PriceRead
from app.auth.deps import Principal
from app.core.errors import Forbidden
from app.partners import repository as partners
from app.partners.errors import PartnerNotFound
from app.programs.service import ProgramContext


async def set_price(
    conn: AsyncConnection,
    program: ProgramContext,
    principal: Principal,
    partner_id: uuid.UUID,
    req: PriceCreate,
) -> PriceRead:
    row = await repository.insert(
        conn,
        program_id=program.id,
        partner_id=partner_id,
        api_key_id=principal.api_key_id,
        **req.model_dump(),
    )
    if row is not None:
        return PriceRead(**row._mapping)
    if not await partners.exists(conn, program.id, partner_id):
        raise PartnerNotFound()
    if req.effective_from is not None and req.effective_from < await repository.now(conn):
        raise PriceInThePast(
            "A change of terms applies from its moment on: postings already made keep the "
            "price they were made at."
        )
    raise PriceExists(f"The partner has terms from {req.effective_from} already.")


async def prices(
    conn: AsyncConnection, program: ProgramContext, principal: Principal, partner_id: uuid.UUID
) -> list[PriceRead]:
    """Newest first. A partner key reads its own only."""
    if not principal.is_operator and principal.partner_id != partner_id:
        raise Forbidden("A partner key reads its own partner's prices only.")
    if not await partners.exists(conn, program.id, partner_id):
        raise PartnerNotFound()
    return [PriceRead(**r._mapping) for r in await repository.prices(conn, program.id, partner_id)]

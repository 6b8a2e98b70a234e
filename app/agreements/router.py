import uuid

from fastapi import APIRouter, status

from app.agreements import service
from app.agreements.errors import PriceExists, PriceInThePast
from app.agreements.schemas import PriceCreate, PriceRead
from app.auth.deps import CurrentPrincipal, OperatorPrincipal
from app.core.errors import Forbidden, Unauthorized, ValidationFailed
from app.core.schemas import problem_responses
from app.db.session import Conn
from app.partners.errors import PartnerNotFound
from app.programs.deps import CurrentProgram

router = APIRouter(tags=["settlement"])


@router.post(
    "/v1/partners/{partner_id}/prices",
    status_code=status.HTTP_201_CREATED,
    operation_id="set_partner_price",
    responses=problem_responses(
        Unauthorized, Forbidden, ValidationFailed, PartnerNotFound, PriceInThePast, PriceExists
    ),
)
async def set_partner_price(
    partner_id: uuid.UUID,
    body: PriceCreate,
    conn: Conn,
    program: CurrentProgram,
    principal: OperatorPrincipal,
) -> PriceRead:
    """New terms for a partner, from `effective_from` (now by default) on: never to the past.
    Every posting records the price in force when it happened. Operator only."""
    return await service.set_price(conn, program, principal, partner_id, body)


@router.get(
    "/v1/partners/{partner_id}/prices",
    operation_id="list_partner_prices",
    responses=problem_responses(Unauthorized, Forbidden, PartnerNotFound),
)
async def list_partner_prices(
    partner_id: uuid.UUID, conn: Conn, program: CurrentProgram, principal: CurrentPrincipal
) -> list[PriceRead]:
    """Every version of the partner's terms, newest first (future ones included). A partner
    key reads its own."""
    return await service.prices(conn, program, principal, partner_id)

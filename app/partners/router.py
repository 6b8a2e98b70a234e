import uuid

from fastapi import APIRouter, status

from app.auth.deps import OperatorPrincipal
from app.core.errors import Forbidden, Unauthorized, ValidationFailed
from app.core.schemas import problem_responses
from app.db.session import Conn
from app.partners import service
from app.partners.errors import PartnerCodeTaken, PartnerNotFound
from app.partners.schemas import PartnerCreate, PartnerRead
from app.programs.deps import CurrentProgram

router = APIRouter(prefix="/v1/partners", tags=["partners"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="create_partner",
    responses=problem_responses(Unauthorized, Forbidden, ValidationFailed, PartnerCodeTaken),
)
async def create_partner(
    body: PartnerCreate, conn: Conn, program: CurrentProgram, principal: OperatorPrincipal
) -> PartnerRead:
    """Add a business to the coalition, with its earn rule (version 1). Operator only."""
    return await service.create_partner(conn, program.id, body, principal.api_key_id)


@router.get(
    "/{partner_id}",
    operation_id="get_partner",
    responses=problem_responses(Unauthorized, Forbidden, PartnerNotFound),
)
async def get_partner(
    partner_id: uuid.UUID, conn: Conn, program: CurrentProgram, _: OperatorPrincipal
) -> PartnerRead:
    return await service.get_partner(conn, program.id, partner_id)

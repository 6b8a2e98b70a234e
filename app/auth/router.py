import uuid

from fastapi import APIRouter, status

from app.auth import service
from app.auth.deps import OperatorPrincipal
from app.auth.errors import ApiKeyNotFound, PartnerRequiredForRole
from app.auth.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from app.core.errors import Forbidden, Unauthorized, ValidationFailed
from app.core.schemas import problem_responses
from app.db.session import Conn
from app.partners.errors import PartnerNotFound
from app.programs.deps import CurrentProgram

router = APIRouter(prefix="/v1/api-keys", tags=["api-keys"])

_AUTH = (Unauthorized, Forbidden)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="create_api_key",
    responses=problem_responses(*_AUTH, ValidationFailed, PartnerRequiredForRole, PartnerNotFound),
)
async def create_api_key(
    body: ApiKeyCreate, conn: Conn, program: CurrentProgram, _: OperatorPrincipal
) -> ApiKeyCreated:
    """Create a key. A POS terminal or checkout gets a `partner` key bound to its partner."""
    return await service.create_key(conn, program.id, body)


@router.get("", operation_id="list_api_keys", responses=problem_responses(*_AUTH))
async def list_api_keys(
    conn: Conn, program: CurrentProgram, _: OperatorPrincipal
) -> list[ApiKeyRead]:
    return await service.list_keys(conn, program.id)


@router.post(
    "/{key_id}/revoke",
    operation_id="revoke_api_key",
    responses=problem_responses(*_AUTH, ApiKeyNotFound),
)
async def revoke_api_key(
    key_id: uuid.UUID, conn: Conn, program: CurrentProgram, _: OperatorPrincipal
) -> ApiKeyRead:
    """Revoke a key at once. Revoking twice keeps the first revocation time."""
    return await service.revoke_key(conn, program.id, key_id)
